//! DNS: the resolver the host consults, and the pinned table reqwest connects from.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use futures::FutureExt;
use futures::future::BoxFuture;

/// Resolves a hostname to addresses. DNS is outside Kelp; tests pass a fixed table.
pub trait Resolve: Send + Sync {
    /// All addresses `host` resolves to (the port is carried through to the addresses).
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>>;
}

/// The operating system's resolver, through `tokio::net::lookup_host`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        let host = host.to_owned();
        async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) }.boxed()
    }
}

/// How many hostnames a pin table keeps before starting afresh. A plugin granted `*` could
/// otherwise grow it without bound; clearing only makes an in-flight connect fail, never
/// reach an unchecked address.
const MAX_PINNED_HOSTS: usize = 1024;

/// The addresses most recently checked for each hostname, handed to reqwest as its resolver,
/// so that a connection goes only to addresses the host checked (a second DNS answer, e.g.
/// from DNS rebinding, is never consulted).
#[derive(Debug, Default)]
pub(crate) struct PinnedAddrs {
    by_host: Mutex<HashMap<String, Vec<IpAddr>>>,
}

impl PinnedAddrs {
    pub(crate) fn pin(&self, host: &str, addrs: Vec<IpAddr>) {
        let mut table = self.by_host.lock().unwrap_or_else(|e| e.into_inner());
        if table.len() >= MAX_PINNED_HOSTS && !table.contains_key(host) {
            table.clear();
        }
        table.insert(host.to_owned(), addrs);
    }
}

impl reqwest::dns::Resolve for PinnedAddrs {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let table = self.by_host.lock().unwrap_or_else(|e| e.into_inner());
        let found = table.get(name.as_str()).cloned();
        drop(table);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = found.ok_or_else(|| -> Box<dyn std::error::Error + Send + Sync> {
                format!("no checked address for host '{host}'").into()
            })?;
            // Port 0 makes the connector use the URL's port (explicit or the scheme default).
            let iter = addrs.into_iter().map(|ip| SocketAddr::new(ip, 0));
            Ok(Box::new(iter) as reqwest::dns::Addrs)
        })
    }
}
