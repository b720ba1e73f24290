//! A TCP relay between a client and a server on loopback that a test can
//! silence: [`Relay::cut`] stops every byte in both directions, on the
//! connections open now and on those made while it lasts, without closing
//! anything, which is what a network partition looks like to both ends
//! (no reset, no FIN: writes are accepted by the kernel and go nowhere).
//! [`Relay::heal`] lets the held bytes through, late: a cut-off client's
//! write arrives after the world moved on, as a stale write would.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A relay from a free loopback port to `target`. Lives (with its
/// threads) until the process exits; dropping it only stops new
/// connections being accepted.
pub struct Relay {
    /// Where clients connect.
    pub port: u16,
    cut: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
}

impl Relay {
    /// Starts relaying `127.0.0.1:port` → `target`.
    pub fn start(target: std::net::SocketAddr) -> std::io::Result<Relay> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let (cut, closed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (cut2, closed2) = (cut.clone(), closed.clone());
        std::thread::Builder::new().name("relay-accept".into()).spawn(move || {
            for client in listener.incoming() {
                if closed2.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else { continue };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else { continue };
                    let cut = cut2.clone();
                    let _ = std::thread::Builder::new().name("relay-copy".into()).spawn(move || pump(from, to, &cut));
                }
            }
        })?;
        Ok(Relay { port, cut, closed })
    }

    /// Silences the relay: bytes in either direction are held, not lost.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Lets held and new bytes through again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// `url` (a `postgres://…@127.0.0.1:PORT/…` URL) through this relay.
    pub fn postgres_url(&self, url: &str, server_port: u16) -> String {
        url.replace(&format!(":{server_port}/"), &format!(":{}/", self.port))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees `closed`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to`, holding each chunk while the relay is cut.
fn pump(mut from: TcpStream, mut to: TcpStream, cut: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while cut.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while cut.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
