//! The QUIC plumbing both ends of the farm share: TLS with pinned
//! certificates ([`tls`]), transport settings, and reading and writing the
//! framed messages of [`tessera_protocol::wire`] on QUIC streams.
//!
//! The coordinator depends on this crate, so these helpers live here rather
//! than in a crate of their own.

pub mod tls;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera_protocol::wire::{self, WireError, HEADER_LEN};

/// Why a network exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("reading a stream: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("writing a stream: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("connecting: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("the peer closed the stream early")]
    Closed,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the peer refused: {0}")]
    Refused(String),
    #[error("protocol violation: {0}")]
    Protocol(String),
}

impl NetError {
    pub fn io(path: &Path, source: std::io::Error) -> NetError {
        NetError::Io { path: path.to_path_buf(), source }
    }
}

impl From<quinn::ReadExactError> for NetError {
    fn from(e: quinn::ReadExactError) -> Self {
        match e {
            quinn::ReadExactError::FinishedEarly(_) => NetError::Closed,
            quinn::ReadExactError::ReadError(e) => NetError::Read(e),
        }
    }
}

/// Transport settings for both ends. `idle_timeout` is how long a silent
/// peer (a killed process, a pulled cable) takes to be declared gone;
/// keep-alives at a third of it keep a quiet but healthy connection open.
/// `peer_streams` bounds the streams the peer may have open at once: the
/// worker lets the coordinator open one per leased tile, the coordinator
/// lets a worker open its control stream and a few blob fetches.
pub fn transport(idle_timeout: Duration, peer_streams: u32) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // Both values are far inside QUIC's range; failure would be a bug here.
    t.max_idle_timeout(Some(idle_timeout.try_into().expect("idle timeout in QUIC's range")));
    t.keep_alive_interval(Some(idle_timeout / 3));
    t.max_concurrent_bidi_streams(peer_streams.into());
    t.max_concurrent_uni_streams(0u32.into());
    t
}

/// Reads one framed message of at most `max` bytes.
pub async fn read_msg<T: DeserializeOwned>(recv: &mut quinn::RecvStream, max: usize) -> Result<T, NetError> {
    let mut header = [0u8; HEADER_LEN];
    recv.read_exact(&mut header).await?;
    let len = wire::body_len(header, max)?;
    let mut body = vec![0; len];
    recv.read_exact(&mut body).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(got) => NetError::Wire(WireError::Truncated { got, expected: len }),
        quinn::ReadExactError::ReadError(e) => NetError::Read(e),
    })?;
    Ok(wire::decode(&body)?)
}

/// Reads a message that is the last on its stream, then the stream's end:
/// a stream read to its end closes quietly, where one dropped early makes
/// QUIC send a STOP_SENDING frame back. A peer that keeps the stream open
/// gets `grace` before it is dropped anyway.
pub async fn read_last<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max: usize,
    grace: Duration,
) -> Result<T, NetError> {
    let msg = read_msg(recv, max).await?;
    let _ = tokio::time::timeout(grace, recv.read_to_end(0)).await;
    Ok(msg)
}

/// Reads messages from `recv` on a task of its own and hands them over a
/// channel, ending with the error that stopped it. Use this for a stream
/// read inside `select!`: `read_msg` is not cancel-safe (a message half
/// read when another branch wins would be lost and the stream desynced),
/// a channel's `recv` is.
pub fn spawn_reader<T: DeserializeOwned + Send + 'static>(
    mut recv: quinn::RecvStream,
    max: usize,
) -> tokio::sync::mpsc::Receiver<Result<T, NetError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let msg = read_msg(&mut recv, max).await;
            let failed = msg.is_err();
            if tx.send(msg).await.is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// Writes one framed message.
pub async fn write_msg<T: Serialize>(send: &mut quinn::SendStream, msg: &T) -> Result<(), NetError> {
    send.write_all(&wire::encode(msg)).await?;
    Ok(())
}

/// Runs `fut` with a deadline.
pub async fn within<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, NetError>>,
) -> Result<T, NetError> {
    tokio::time::timeout(limit, fut).await.unwrap_or(Err(NetError::Timeout(limit)))
}
