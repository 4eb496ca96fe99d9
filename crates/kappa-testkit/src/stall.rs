//! A peer that stops reading its socket, on loopback sockets with small buffers,
//! so what is sent to it waits in the sender's session rather than in the
//! kernel (`kappa-core/tests/many_peers.rs`, `kappa-core/examples/many_peers.rs`).

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_std::net::{TcpListener, TcpStream};
use futures::channel::oneshot;
use futures::{AsyncRead, AsyncWrite};

/// A stream whose reads stop (stay pending for ever) from the first read at
/// which `stop` says so; writes go on. `stopped` hears when that happens.
pub struct StopsReading {
    /// The socket.
    pub inner: TcpStream,
    /// Asked at each read once running: true stops reading from then on.
    pub stop: Box<dyn FnMut() -> bool + Send>,
    /// Hears the stop (`None` afterwards).
    pub stopped: Option<oneshot::Sender<()>>,
}

impl AsyncRead for StopsReading {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.stopped.is_none() {
            return Poll::Pending;
        }
        if (this.stop)() {
            if let Some(tx) = this.stopped.take() {
                let _ = tx.send(());
            }
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StopsReading {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A loopback listener whose accepted sockets have a small send buffer.
pub fn small_send_buffer_listener() -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.set_send_buffer_size(4096)?;
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    s.listen(16)?;
    Ok(TcpListener::from(std::net::TcpListener::from(s)))
}

/// Connects with a small receive buffer.
pub fn connect_small_receive_buffer(addr: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.set_recv_buffer_size(4096)?;
    s.connect(&addr.into())?;
    Ok(TcpStream::from(std::net::TcpStream::from(s)))
}
