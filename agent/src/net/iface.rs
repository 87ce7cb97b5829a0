//! Network interfaces by hand: what `ip link`/`ip addr`/`ip route` would
//! do, with the classic ioctls (no netlink needed for one address and one
//! default route). Interface facts are read from sysfs.

use std::ffi::CString;
use std::fs;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use kernel_cmdline::MacAddr;

/// An Ethernet interface as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub mac: MacAddr,
}

/// Ethernet interfaces (ARPHRD_ETHER), sorted by name; `lo` and friends are
/// not candidates for deploying over.
pub fn list(sys_class_net: &Path) -> Vec<Iface> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir(sys_class_net) else {
        return out;
    };
    for e in dir.flatten() {
        let p = e.path();
        let read = |f: &str| fs::read_to_string(p.join(f)).unwrap_or_default();
        if read("type").trim() != "1" {
            continue;
        }
        let Ok(mac) = read("address").trim().parse::<MacAddr>() else {
            continue;
        };
        if mac.0 == [0; 6] {
            continue;
        }
        out.push(Iface {
            name: e.file_name().to_string_lossy().into_owned(),
            mac,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Does the interface see a link partner? (sysfs `carrier`; reading it
/// fails while the interface is down, which counts as no.)
pub fn has_carrier(name: &str) -> bool {
    fs::read_to_string(format!("/sys/class/net/{name}/carrier")).is_ok_and(|s| s.trim() == "1")
}

fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the returned fd is checked and owned.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly created, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

fn sockaddr_in(a: Ipv4Addr) -> libc::sockaddr {
    // SAFETY: sockaddr_in and sockaddr are POD of the same size (16 bytes);
    // the kernel reads an AF_INET sockaddr through the generic type.
    unsafe {
        let mut sin: libc::sockaddr_in = mem::zeroed();
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_addr.s_addr = u32::from(a).to_be();
        mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin)
    }
}

fn check(ret: libc::c_int, what: &str, name: &str) -> io::Result<()> {
    if ret < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what} on {name}: {e}")));
    }
    Ok(())
}

/// `ip link set NAME up`
pub fn set_up(name: &str) -> io::Result<()> {
    set_flag_up(name, true)
}

/// `ip link set NAME down`
pub fn set_down(name: &str) -> io::Result<()> {
    set_flag_up(name, false)
}

fn set_flag_up(name: &str, up: bool) -> io::Result<()> {
    let sock = ioctl_socket()?;
    let mut req = ifreq(name)?;
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read/write the ifreq we own; the
    // flags union member is the one these requests use.
    unsafe {
        check(
            libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req),
            "SIOCGIFFLAGS",
            name,
        )?;
        if up {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        } else {
            req.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short);
        }
        check(
            libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req),
            "SIOCSIFFLAGS",
            name,
        )
    }
}

/// `ip addr add ADDR/MASK dev NAME` (replacing the primary address).
pub fn set_address(name: &str, addr: Ipv4Addr, mask: Ipv4Addr) -> io::Result<()> {
    let (sock, mut req) = set_primary(name, addr)?;
    req.ifr_ifru.ifru_netmask = sockaddr_in(mask);
    // SAFETY: as above.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFNETMASK as _, &req) };
    check(ret, "SIOCSIFNETMASK", name)
}

/// `ip addr del` of the primary address (with the routes through it): the
/// kernel deletes the address when it is set to 0.0.0.0.
pub fn clear_address(name: &str) -> io::Result<()> {
    set_primary(name, Ipv4Addr::UNSPECIFIED).map(drop)
}

/// SIOCSIFADDR; the socket and request, for SIOCSIFNETMASK to follow.
fn set_primary(name: &str, addr: Ipv4Addr) -> io::Result<(OwnedFd, libc::ifreq)> {
    let sock = ioctl_socket()?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_addr = sockaddr_in(addr);
    // SAFETY: the ifreq is fully initialised and owned; the kernel only reads it.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFADDR as _, &req) };
    check(ret, "SIOCSIFADDR", name)?;
    Ok((sock, req))
}

/// The kernel's `struct rtentry` (include/uapi/linux/route.h). Declared
/// here because the libc crate only has it for musl, and the agent's tests
/// run on glibc hosts too.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

const RTF_UP: libc::c_ushort = 0x0001;
const RTF_GATEWAY: libc::c_ushort = 0x0002;

/// `ip route add default via GW dev NAME`. An existing identical route is fine.
pub fn add_default_route(name: &str, gw: Ipv4Addr) -> io::Result<()> {
    let sock = ioctl_socket()?;
    let dev = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let any = sockaddr_in(Ipv4Addr::UNSPECIFIED);
    let mut rt = RtEntry {
        rt_pad1: 0,
        rt_dst: any,
        rt_gateway: sockaddr_in(gw),
        rt_genmask: any,
        rt_flags: RTF_UP | RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: dev.as_ptr() as *mut libc::c_char,
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    // SAFETY: rt is a complete rtentry; rt_dev points at a NUL-terminated
    // string that outlives the call; the kernel only reads the struct.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT as _, &mut rt) };
    match check(ret, "SIOCADDRT", name) {
        Err(e) if e.raw_os_error().is_none() && e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// A UDP socket on port 68 bound to one interface, able to broadcast: a
/// DHCP client's socket, before the interface has an address (broadcasts
/// from 0.0.0.0) and after (unicasts from our address to the server, whose
/// unicast replies to our port 68 it receives too).
pub fn dhcp_socket(name: &str) -> io::Result<UdpSocket> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 68))?;
    sock.set_broadcast(true)?;
    let dev = name.as_bytes();
    // SAFETY: SO_BINDTODEVICE reads `dev.len()` bytes from a live slice.
    let ret = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            dev.as_ptr().cast(),
            dev.len() as libc::socklen_t,
        )
    };
    check(ret, "SO_BINDTODEVICE", name)?;
    Ok(sock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_ethernet_interfaces_only() {
        let dir = tempfile::tempdir().unwrap();
        let mk = |n: &str, t: &str, a: &str| {
            let p = dir.path().join(n);
            fs::create_dir_all(&p).unwrap();
            fs::write(p.join("type"), t).unwrap();
            fs::write(p.join("address"), a).unwrap();
        };
        mk("lo", "772\n", "00:00:00:00:00:00\n");
        mk("eth1", "1\n", "52:54:00:00:00:02\n");
        mk("eth0", "1\n", "52:54:00:00:00:01\n");
        mk("sit0", "776\n", "00:00:00:00\n");
        let l = list(dir.path());
        assert_eq!(
            l.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            ["eth0", "eth1"]
        );
        assert_eq!(l[0].mac, MacAddr([0x52, 0x54, 0, 0, 0, 1]));
    }

    #[test]
    fn rtentry_matches_the_kernel_layout() {
        // x86_64: 8 + 3*16 + 2 + 2 + (pad 4) + 8 + 8 + 2 + (pad 6) + 8 + 8 + 8 + 2 (+pad) = 120
        #[cfg(target_arch = "x86_64")]
        assert_eq!(mem::size_of::<RtEntry>(), 120);
    }
}
