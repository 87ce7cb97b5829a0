//! One report POSTed to the first server that answers, and what its answer
//! means: 2xx recorded, 4xx refused for good (a wrong token, a report that
//! does not fit the deployment: sending it again cannot help), anything
//! else (no connection, 5xx) worth trying elsewhere or later.

use std::time::Duration;

use kernel_cmdline::{MacAddr, ServerUrl};

use super::protocol::report_path;
use crate::fetch::Client;

/// The server answers one short line; anything longer is not a drover server.
const ANSWER_LIMIT: usize = 4096;

/// The servers reports go to, the one that answered last tried first.
pub struct Servers {
    clients: Vec<Client>,
    path: String,
    preferred: usize,
    /// The last attempt reached a server (whatever it answered).
    pub reachable: bool,
}

/// What came of one report.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Recorded by the server at this URL.
    Recorded(String),
    /// A server answered 4xx: its status and reason.
    Refused(String),
    /// No server recorded it; what each said or why it could not be reached.
    Failed(String),
}

impl Servers {
    pub fn new(urls: &[ServerUrl], token: &str, mac: &MacAddr, timeout: Duration) -> Servers {
        let clients = urls
            .iter()
            .map(|u| {
                let mut c = Client::new(u.clone());
                c.timeout = timeout;
                c.token = Some(token.to_owned());
                c
            })
            .collect();
        Servers {
            clients,
            path: report_path(mac),
            preferred: 0,
            reachable: true,
        }
    }

    /// Try each server once, the preferred one first, then the others in
    /// the order the command line gave them.
    pub fn post(&mut self, body: &[u8]) -> Answer {
        let order = std::iter::once(self.preferred)
            .chain((0..self.clients.len()).filter(|&i| i != self.preferred));
        let mut problems = Vec::new();
        self.reachable = false;
        for i in order {
            let client = &self.clients[i];
            let url = client.url(&self.path);
            match client.post_json(&self.path, body, ANSWER_LIMIT) {
                Ok(r) => {
                    self.reachable = true;
                    let status = r.head.status;
                    let text = String::from_utf8_lossy(&r.body);
                    let line = text.lines().next().unwrap_or_default().trim();
                    let said = if line.is_empty() {
                        format!("{status} {}", r.head.reason)
                    } else {
                        format!("{status} {}: {line}", r.head.reason)
                    };
                    match status {
                        200..=299 => {
                            self.preferred = i;
                            return Answer::Recorded(client.server.to_string());
                        }
                        400..=499 => {
                            self.preferred = i;
                            return Answer::Refused(format!("{url} answered {said}"));
                        }
                        _ => problems.push(format!("{url} answered {said}")),
                    }
                }
                Err(e) => problems.push(format!("{e:#}")),
            }
        }
        Answer::Failed(problems.join("; "))
    }
}
