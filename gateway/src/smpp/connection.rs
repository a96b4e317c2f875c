//! Opening the byte stream to a vendor: DNS, TCP (TCP_NODELAY on), then TLS when asked.
//! Each step has its own timeout and its own error variant, so a failure always names the
//! stage it happened in; diagnostics turns these into reasons a person can act on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A connected byte stream, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
pub type Transport = Box<dyn Io>;

/// Where to connect and how.
#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// TLS client config and the name for SNI/verification; None for plain TCP.
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    pub connect_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("DNS lookup of {host} failed: {source}")]
    Dns {
        host: String,
        source: std::io::Error,
    },
    #[error("DNS lookup of {host} returned no address")]
    DnsEmpty { host: String },
    #[error("DNS lookup of {host} timed out")]
    DnsTimeout { host: String },
    #[error("TCP connection to {addr} refused")]
    TcpRefused { addr: SocketAddr },
    #[error("TCP connection to {addr} timed out")]
    TcpTimeout { addr: SocketAddr },
    #[error("TCP connection to {addr} failed: {source}")]
    Tcp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} timed out")]
    TlsTimeout { addr: SocketAddr },
}

/// Resolves, connects and (optionally) runs the TLS handshake. Returns the stream and the
/// address actually reached.
pub async fn connect(t: &Target) -> Result<(Transport, SocketAddr), ConnectError> {
    let host = t.host.clone();
    let lookup = timeout(
        t.connect_timeout,
        tokio::net::lookup_host((t.host.as_str(), t.port)),
    )
    .await;
    let addrs: Vec<SocketAddr> = match lookup {
        Err(_) => return Err(ConnectError::DnsTimeout { host }),
        Ok(Err(source)) => return Err(ConnectError::Dns { host, source }),
        Ok(Ok(a)) => a.collect(),
    };
    let mut last = None;
    for addr in &addrs {
        match tcp(*addr, t.connect_timeout).await {
            Ok(stream) => return finish(stream, *addr, t).await,
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(ConnectError::DnsEmpty { host }))
}

async fn tcp(addr: SocketAddr, limit: Duration) -> Result<TcpStream, ConnectError> {
    let stream = match timeout(limit, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::TcpTimeout { addr }),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(ConnectError::TcpRefused { addr });
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
            return Err(ConnectError::TcpTimeout { addr });
        }
        Ok(Err(source)) => return Err(ConnectError::Tcp { addr, source }),
        Ok(Ok(s)) => s,
    };
    // One PDU per round trip at small windows: Nagle would add up to 40 ms to each.
    stream
        .set_nodelay(true)
        .map_err(|source| ConnectError::Tcp { addr, source })?;
    Ok(stream)
}

async fn finish(
    stream: TcpStream,
    addr: SocketAddr,
    t: &Target,
) -> Result<(Transport, SocketAddr), ConnectError> {
    let Some((config, name)) = &t.tls else {
        return Ok((Box::new(stream), addr));
    };
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    match timeout(t.connect_timeout, connector.connect(name.clone(), stream)).await {
        Err(_) => Err(ConnectError::TlsTimeout { addr }),
        Ok(Err(source)) => Err(ConnectError::Tls { addr, source }),
        Ok(Ok(tls)) => Ok((Box::new(tls), addr)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16) -> Target {
        Target {
            host: host.into(),
            port,
            tls: None,
            connect_timeout: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn refused_is_named() {
        // Bind then drop a listener: the port is free and nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = connect(&target("127.0.0.1", port)).await.err().unwrap();
        assert!(matches!(err, ConnectError::TcpRefused { .. }), "{err}");
    }

    #[tokio::test]
    async fn unknown_host_is_dns() {
        let err = connect(&target("no-such-host.invalid", 2775))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(
                err,
                ConnectError::Dns { .. } | ConnectError::DnsEmpty { .. }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn plain_connect_works() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (_t, addr) = connect(&target("127.0.0.1", port)).await.unwrap();
        assert_eq!(addr.port(), port);
    }
}
