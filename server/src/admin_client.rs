//! The CLI's side of the admin API: `node …`, `deploy` and `status` talk
//! to the running server over HTTP with the agent's small blocking client,
//! so the server process stays the one owner of the fleet database.
//!
//! The server is the config's `public_url` and the token its state
//! directory's `admin.token`, unless given. A server that cannot be
//! reached and every refusal are errors whose message is what the server
//! said.

use std::io;
use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};
use drover_agent::chain::api::{SessionStatus, Start, SESSIONS_PATH, START_PATH};
use drover_agent::chain::SessionId;
use drover_agent::fetch::Client;
use kernel_cmdline::ServerUrl;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{self, AddNode, DeployRequest, Deployed, Node, NodeDetail, NodeList};
use crate::config::Config;
use crate::tokens;

/// An authenticated connection to one server's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    client: Client,
}

impl AdminClient {
    /// Talk to `server` with `token`.
    pub fn new(server: ServerUrl, token: String) -> AdminClient {
        let mut client = Client::new(server);
        client.token = Some(token);
        AdminClient { client }
    }

    /// The server of `config` (or `server`), with the token of its state
    /// directory (or from `token_file`).
    pub fn for_config(
        config: &Config,
        server: Option<&str>,
        token_file: Option<&Path>,
    ) -> Result<AdminClient> {
        let url = server.unwrap_or(&config.public_url);
        let url: ServerUrl = url
            .trim_end_matches('/')
            .parse()
            .map_err(|e| anyhow!("--server {url:?}: {e}"))?;
        let token_path = match token_file {
            Some(path) => path.to_owned(),
            None => tokens::admin_token_path(&config.state),
        };
        let token = tokens::read_admin_token(&token_path)?;
        Ok(AdminClient::new(url, token))
    }

    /// Every node.
    pub fn nodes(&self) -> Result<Vec<Node>> {
        let list: NodeList = self.call("GET", api::NODES_PATH, None::<&()>)?;
        Ok(list.nodes)
    }

    /// Register a node.
    pub fn add(&self, req: &AddNode) -> Result<Node> {
        self.call("POST", api::NODES_PATH, Some(req))
    }

    /// A node (MAC or name) and its recent events.
    pub fn show(&self, node: &str) -> Result<NodeDetail> {
        self.call("GET", &api::node_path(node), None::<&()>)
    }

    /// Forget a node; what it was.
    pub fn remove(&self, node: &str) -> Result<Node> {
        self.call("DELETE", &api::node_path(node), None::<&()>)
    }

    /// Assign an image to nodes.
    pub fn deploy(&self, req: &DeployRequest) -> Result<Vec<Node>> {
        let deployed: Deployed = self.call("POST", api::DEPLOY_PATH, Some(req))?;
        Ok(deployed.nodes)
    }

    /// A chain session as the coordinator sees it.
    pub fn chain_status(&self, session: &SessionId) -> Result<SessionStatus> {
        self.call("GET", &format!("{SESSIONS_PATH}/{session}"), None::<&()>)
    }

    /// Start a chain session now, with the nodes that have joined.
    pub fn chain_start(&self, session: &SessionId) -> Result<SessionStatus> {
        let req = Start {
            session: session.to_string(),
        };
        self.call("POST", START_PATH, Some(&req))
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let json = body
            .map(serde_json::to_vec)
            .transpose()
            .context("encoding the request")?;
        let url = self.client.url(path);
        let resp = self
            .client
            .send(method, path, json.as_deref(), api::MAX_RESPONSE)
            .map_err(|e| unreachable(e, &self.client.server))?;
        let status = resp.head.status;
        if !(200..300).contains(&status) {
            let said = String::from_utf8_lossy(&resp.body).trim().to_owned();
            if said.is_empty() {
                bail!(
                    "{method} {url}: server answered {status} {}",
                    resp.head.reason
                );
            }
            // The server's one line says what was wrong: it is the message.
            bail!("{said}");
        }
        serde_json::from_slice(&resp.body).with_context(|| {
            format!("{method} {url}: unexpected answer (is that a drover-server of this version?)")
        })
    }
}

/// A refused connection says what to do about it.
fn unreachable(e: anyhow::Error, server: &ServerUrl) -> anyhow::Error {
    let refused = e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::ConnectionRefused)
    });
    if refused {
        anyhow!("cannot reach drover-server at {server} (is `drover-server serve` running?): connection refused")
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_connection_says_to_start_the_server() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let url: ServerUrl = format!("http://127.0.0.1:{port}").parse().unwrap();
        let e = AdminClient::new(url, "t".into())
            .nodes()
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("cannot reach drover-server at http://127.0.0.1:{port} (is `drover-server serve` running?): connection refused")
        );
    }
}
