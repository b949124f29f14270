//! HTTPS for the node's listener: rustls (ring) in front of the same axum
//! router.
//!
//! [`TlsListener`] is an [`axum::serve::Listener`]: a task accepts TCP
//! connections and runs each TLS handshake in its own task (bounded by
//! [`HANDSHAKE_TIMEOUT`]), so a slow or silent client never holds up the
//! others; finished handshakes are handed to axum through a channel. A
//! client that speaks plain HTTP to this port fails the handshake and is
//! disconnected: nothing is served without TLS.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use inferwatch_query::tokio_rustls::server::TlsStream;
use inferwatch_query::tokio_rustls::TlsAcceptor;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::ServerError;

/// Longest a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Finished handshakes waiting for axum; past this, accepting waits.
const READY_CONNECTIONS: usize = 64;

/// A TLS listener for `axum::serve`.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS on `listener` with the PEM certificate chain and key.
    pub fn new(listener: TcpListener, certificate: &Path, key: &Path) -> Result<Self, ServerError> {
        let (config, _) =
            inferwatch_query::rustls_server_config(certificate, key, vec![b"http/1.1".to_vec()])?;
        let acceptor = TlsAcceptor::from(config);
        let local = listener
            .local_addr()
            .map_err(|source| ServerError::Listen {
                address: "the TLS listener".into(),
                source,
            })?;
        let (sender, ready) = mpsc::channel(READY_CONNECTIONS);
        let accepting = tokio::spawn(async move {
            loop {
                let (socket, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait, retry.
                        eprintln!("inferwatch serve: accepting a connection failed: {error}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    // A failed handshake (a plain-HTTP client, a client
                    // that does not trust the certificate, a port scan) or
                    // one past the timeout: nothing to serve.
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket));
                    if let Ok(Ok(stream)) = handshake.await {
                        let _ = sender.send((stream, peer)).await;
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
