//! Which addresses an upstream may make wheelgate connect to.
//!
//! A page lists file links, and wheelgate fetches them from where it runs: inside a cluster,
//! beside a cloud metadata service, on a host with admin ports bound to loopback. A hostile or
//! compromised upstream could list `http://169.254.169.254/…` or `http://10.0.0.7:8080/…` and
//! have wheelgate fetch (and serve) what only wheelgate can reach. So a connection to a
//! loopback, private, link-local, CGNAT or unspecified address is refused, unless the upstream's
//! own root resolves to an address of that class (a sidecar chained to a private central
//! index, a test on 127.0.0.1), or the host (or `host:port`) is listed in the repository's
//! `file_hosts`.
//!
//! The check is made on the addresses a name resolves to, by the resolver the connector
//! connects with, so a name that resolves to a public address when checked and to a private one
//! when connecting (DNS rebinding) cannot slip through; literal addresses are checked before
//! connecting. Redirects are connections like any other. Through an HTTP proxy only literal
//! addresses can be checked: the proxy resolves names.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use tower_service::Service;
use url::{Host, Url};

use super::auth::AuthHost;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The kind of network an address belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Anything routable on the internet.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, fc00::/7.
    Private,
    /// 169.254/16 (cloud metadata services live there), fe80::/10.
    LinkLocal,
    /// 100.64/10, carrier-grade NAT.
    SharedNat,
    /// 0.0.0.0/8, :: (which reach the local host).
    Unspecified,
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressClass::Public => "public",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link-local",
            AddressClass::SharedNat => "shared (CGNAT)",
            AddressClass::Unspecified => "unspecified",
        })
    }
}

/// The class of `ip`; an IPv4 address mapped into IPv6 is judged as the IPv4 address.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_private() {
        AddressClass::Private
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if a == 100 && (64..128).contains(&b) {
        AddressClass::SharedNat
    } else if a == 0 {
        AddressClass::Unspecified
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if first & 0xfe00 == 0xfc00 {
        AddressClass::Private
    } else if first & 0xffc0 == 0xfe80 {
        AddressClass::LinkLocal
    } else {
        AddressClass::Public
    }
}

/// A destination refused by the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refused by policy: {host} is {address}, a {class} address, and wheelgate connects to {class} \
     addresses only when the repository's own upstream is on one or the host is listed in the \
     repository's file_hosts"
)]
pub struct Refused {
    /// The host as the link gave it.
    pub host: String,
    /// The address it is (or resolved to).
    pub address: IpAddr,
    /// Its class.
    pub class: AddressClass,
}

/// The policy of one upstream client.
pub(super) struct Policy {
    /// The upstream root's host and port.
    root: (Host<String>, u16),
    /// `file_hosts`.
    listed: Vec<AuthHost>,
    /// The classes of the root's addresses, once known.
    root_classes: Mutex<Option<Vec<AddressClass>>>,
}

impl Policy {
    /// The policy for an upstream whose root is `root`, with the `file_hosts` entries `listed`
    /// (already validated: an invalid entry is reported with its text).
    pub(super) fn new(root: &Url, listed: Vec<AuthHost>) -> Policy {
        let host = root
            .host()
            .map(|host| host.to_owned())
            .unwrap_or(Host::Domain(String::new()));
        let port = root.port_or_known_default().unwrap_or(443);
        let known = match &host {
            Host::Ipv4(ip) => Some(vec![classify(IpAddr::V4(*ip))]),
            Host::Ipv6(ip) => Some(vec![classify(IpAddr::V6(*ip))]),
            Host::Domain(_) => None,
        };
        Policy {
            root: (host, port),
            listed,
            root_classes: Mutex::new(known),
        }
    }

    /// True when `file_hosts` lists `host` (on `port`): no address check at all.
    pub(super) fn is_listed(&self, host: &Host<String>, port: u16) -> bool {
        self.listed
            .iter()
            .any(|entry| entry.is_destination(host, port))
    }

    fn is_root(&self, host: &str) -> bool {
        matches!(&self.root.0, Host::Domain(root) if root.eq_ignore_ascii_case(host))
    }

    /// The classes the upstream root is on (resolving it the first time); empty while it cannot
    /// be resolved, which allows only public addresses.
    async fn root_classes(&self) -> Vec<AddressClass> {
        if let Some(known) = crate::lock(&self.root_classes).clone() {
            return known;
        }
        let Host::Domain(name) = &self.root.0 else {
            return Vec::new();
        };
        match tokio::net::lookup_host((name.as_str(), self.root.1)).await {
            Ok(addrs) => {
                let classes = classes_of(addrs.map(|addr| addr.ip()));
                *crate::lock(&self.root_classes) = Some(classes.clone());
                classes
            }
            Err(_) => Vec::new(),
        }
    }

    /// Refuses `address` (of `host`) unless it is public or of a class the root is on.
    pub(super) async fn check(&self, host: &str, address: IpAddr) -> Result<(), Refused> {
        let class = classify(address);
        if class == AddressClass::Public || self.root_classes().await.contains(&class) {
            return Ok(());
        }
        Err(Refused {
            host: host.to_owned(),
            address,
            class,
        })
    }

    /// The addresses of `host` that may be connected to: all of them for the root itself (and
    /// their classes are learnt), else those the policy allows; refused when none is left.
    async fn filter(
        &self,
        host: &str,
        resolved: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Refused> {
        if self.is_root(host) {
            let classes = classes_of(resolved.iter().map(SocketAddr::ip));
            *crate::lock(&self.root_classes) = Some(classes);
            return Ok(resolved);
        }
        let mut allowed = Vec::with_capacity(resolved.len());
        let mut first_refusal = None;
        for addr in resolved {
            match self.check(host, addr.ip()).await {
                Ok(()) => allowed.push(addr),
                Err(refused) => {
                    first_refusal.get_or_insert(refused);
                }
            }
        }
        match (allowed.is_empty(), first_refusal) {
            (true, Some(refused)) => Err(refused),
            _ => Ok(allowed),
        }
    }
}

fn classes_of(addresses: impl Iterator<Item = IpAddr>) -> Vec<AddressClass> {
    let mut classes = Vec::new();
    for class in addresses.map(classify) {
        if !classes.contains(&class) {
            classes.push(class);
        }
    }
    classes
}

/// The resolver of the upstream connector: the system's, with the policy applied to what it
/// answers.
#[derive(Clone)]
pub(super) struct CheckedResolver {
    pub(super) policy: Arc<Policy>,
}

impl Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = policy.filter(&host, resolved).await?;
            Ok(allowed.into_iter())
        })
    }
}

/// The policy refusal in an error's source chain, if that is why a request failed.
pub(super) fn refusal<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_are_classified() {
        for (address, class) in [
            ("127.0.0.1", AddressClass::Loopback),
            ("127.5.6.7", AddressClass::Loopback),
            ("::1", AddressClass::Loopback),
            ("10.0.0.5", AddressClass::Private),
            ("172.16.0.1", AddressClass::Private),
            ("172.31.255.255", AddressClass::Private),
            ("192.168.1.1", AddressClass::Private),
            ("fc00::1", AddressClass::Private),
            ("fd12:3456::1", AddressClass::Private),
            ("169.254.169.254", AddressClass::LinkLocal),
            ("fe80::1", AddressClass::LinkLocal),
            ("febf::1", AddressClass::LinkLocal),
            ("100.64.0.1", AddressClass::SharedNat),
            ("100.127.255.255", AddressClass::SharedNat),
            ("0.0.0.0", AddressClass::Unspecified),
            ("::", AddressClass::Unspecified),
            ("::ffff:10.1.2.3", AddressClass::Private),
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("172.32.0.1", AddressClass::Public),
            ("100.128.0.1", AddressClass::Public),
            ("100.63.255.255", AddressClass::Public),
            ("192.0.2.1", AddressClass::Public),
            ("2001:db8::1", AddressClass::Public),
            ("fec0::1", AddressClass::Public),
        ] {
            assert_eq!(classify(ip(address)), class, "{address}");
        }
    }

    fn policy(root: &str, listed: &[&str]) -> Policy {
        Policy::new(
            &Url::parse(root).unwrap(),
            listed
                .iter()
                .map(|entry| AuthHost::parse(entry).unwrap())
                .collect(),
        )
    }

    #[tokio::test]
    async fn only_the_classes_of_the_root_are_allowed_besides_public() {
        let public_root = policy("https://192.0.2.10/simple/", &[]);
        assert!(public_root.check("files", ip("192.0.2.20")).await.is_ok());
        for private in [
            "127.0.0.1",
            "10.0.0.1",
            "169.254.169.254",
            "100.64.1.1",
            "0.0.0.0",
            "::1",
        ] {
            let refused = public_root.check("files", ip(private)).await.unwrap_err();
            assert_eq!(refused.address, ip(private));
            let message = refused.to_string();
            assert!(
                message.contains("file_hosts") && message.contains("refused by policy"),
                "{message}"
            );
        }
        let loopback_root = policy("http://127.0.0.1:8080/simple/", &[]);
        assert!(loopback_root.check("files", ip("127.0.0.2")).await.is_ok());
        assert!(loopback_root.check("files", ip("192.0.2.1")).await.is_ok());
        let refused = loopback_root
            .check("files", ip("10.1.1.1"))
            .await
            .unwrap_err();
        assert_eq!(refused.class, AddressClass::Private);
        let private_root = policy("http://10.0.0.2/simple/", &[]);
        assert!(private_root.check("central", ip("10.9.9.9")).await.is_ok());
        assert!(private_root
            .check("meta", ip("169.254.169.254"))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_nothing_allowed_is_refused_and_mixed_answers_are_filtered() {
        let root = policy("https://192.0.2.10/simple/", &[]);
        let addr = |text: &str| SocketAddr::new(ip(text), 443);
        let refused = root
            .filter(
                "rebind.example.invalid",
                vec![addr("10.0.0.1"), addr("169.254.1.1")],
            )
            .await
            .unwrap_err();
        assert_eq!(refused.class, AddressClass::Private);
        assert_eq!(refused.host, "rebind.example.invalid");
        let kept = root
            .filter(
                "mixed.example.invalid",
                vec![addr("10.0.0.1"), addr("192.0.2.7")],
            )
            .await
            .unwrap();
        assert_eq!(kept, vec![addr("192.0.2.7")]);
    }

    #[tokio::test]
    async fn the_root_host_itself_teaches_its_classes() {
        let root = policy("https://index.example.invalid/simple/", &[]);
        let addr = |text: &str| SocketAddr::new(ip(text), 443);
        assert_eq!(
            root.filter("Index.Example.Invalid", vec![addr("10.0.0.3")])
                .await
                .unwrap(),
            vec![addr("10.0.0.3")]
        );
        assert!(root.check("files", ip("10.0.0.4")).await.is_ok());
        assert!(root.check("files", ip("127.0.0.1")).await.is_err());
    }

    #[test]
    fn file_hosts_list_a_host_on_any_port_or_on_one() {
        let listed = policy(
            "https://192.0.2.10/simple/",
            &["files.example.internal", "10.0.0.5:8443"],
        );
        let domain = Host::Domain("files.example.internal".to_owned());
        assert!(listed.is_listed(&domain, 443));
        assert!(listed.is_listed(&domain, 9000));
        let literal = Host::Ipv4("10.0.0.5".parse().unwrap());
        assert!(listed.is_listed(&literal, 8443));
        assert!(!listed.is_listed(&literal, 8444));
        assert!(!listed.is_listed(&Host::Domain("other.example.internal".to_owned()), 443));
    }

    #[test]
    fn a_refusal_is_found_in_an_error_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("connect failed")]
        struct Outer(#[source] BoxError);
        let refused = Refused {
            host: "h".to_owned(),
            address: ip("10.0.0.1"),
            class: AddressClass::Private,
        };
        let error = Outer(Box::new(refused.clone()));
        assert_eq!(refusal(&error), Some(&refused));
        let other = Outer("dns error".into());
        assert_eq!(refusal(&other), None);
    }
}
