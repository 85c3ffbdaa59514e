//! Handing the listening socket from one process to the next without
//! dropping a connection. On shutdown the server first stops accepting,
//! leaving new connections in the socket's backlog (the socket stays open
//! in the supervisor that handed it over, systemd or another), then lets
//! the connections it already accepted deliver their first request before
//! closing idle ones: a connection accepted a moment before the signal
//! would otherwise be closed before its request was read.

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::serve::{IncomingStream, Listener};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;

/// How long connections accepted just before shutdown get to send their
/// first request.
pub(crate) const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(250);

/// A TCP listener that stops accepting once `stop` is true.
pub(crate) struct Handover {
    pub inner: tokio::net::TcpListener,
    pub stop: watch::Receiver<bool>,
}

impl Listener for Handover {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if *self.stop.borrow() {
                // Stopped: leave connections to the next process.
                std::future::pending::<()>().await;
            }
            tokio::select! {
                conn = Listener::accept(&mut self.inner) => return conn,
                _ = self.stop.changed() => {}
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The peer of a connection, as [`ConnectInfo`] for handlers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, Handover>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Handover>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// Gives handlers the peer address as `ConnectInfo<SocketAddr>`, as axum's
/// own TCP listener does.
pub(crate) async fn peer_as_socket_addr(
    ConnectInfo(peer): ConnectInfo<Peer>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    req.extensions_mut().insert(ConnectInfo(peer.0));
    next.run(req).await
}
