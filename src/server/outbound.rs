//! Which proxy the gateway's outbound requests take. Real providers are reached
//! through the environment's proxy (`HTTPS_PROXY`, `HTTP_PROXY` or `ALL_PROXY`,
//! with `NO_PROXY`), as any HTTP client does; loopback never is. The simulated
//! providers and the fault proxy listen on loopback, and reqwest's own reading
//! of the environment would send those requests to a corporate proxy too,
//! which cannot reach this machine's loopback: every answer would then come
//! from the last resort.

/// Hosts no request is proxied to, whatever `NO_PROXY` says.
const LOOPBACK: &str = "localhost,127.0.0.0/8,::1";

/// The proxies `lookup` (the environment, in production) names, each skipping
/// loopback and `NO_PROXY`'s hosts; none when no proxy is set.
pub(super) fn proxies(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<reqwest::Proxy>, reqwest::Error> {
    let var = |names: [&str; 2]| {
        names
            .into_iter()
            .find_map(|name| lookup(name).filter(|value| !value.trim().is_empty()))
    };
    let all = var(["ALL_PROXY", "all_proxy"]);
    let https = var(["HTTPS_PROXY", "https_proxy"]).or_else(|| all.clone());
    let http = var(["HTTP_PROXY", "http_proxy"]).or(all);
    let skipped = match var(["NO_PROXY", "no_proxy"]) {
        Some(listed) => format!("{listed},{LOOPBACK}"),
        None => LOOPBACK.to_string(),
    };
    let no_proxy = || reqwest::NoProxy::from_string(&skipped);
    let mut proxies = Vec::new();
    if let Some(url) = https {
        proxies.push(reqwest::Proxy::https(url.trim())?.no_proxy(no_proxy()));
    }
    if let Some(url) = http {
        proxies.push(reqwest::Proxy::http(url.trim())?.no_proxy(no_proxy()));
    }
    Ok(proxies)
}

/// `builder` with [`proxies`] from the process environment in place of
/// reqwest's own reading of it.
pub(super) fn client(
    builder: reqwest::ClientBuilder,
) -> Result<reqwest::ClientBuilder, reqwest::Error> {
    let builder = builder.no_proxy();
    Ok(proxies(|name| std::env::var(name).ok())?
        .into_iter()
        .fold(builder, reqwest::ClientBuilder::proxy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that answers every request with 200 and the request line it got.
    async fn echo_line() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0; 4096];
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).to_string();
                    let line = head.lines().next().unwrap_or_default().to_string();
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{line}",
                        line.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        });
        format!("http://{addr}")
    }

    async fn get(client: &reqwest::Client, url: &str) -> String {
        client.get(url).send().await.unwrap().text().await.unwrap()
    }

    #[tokio::test]
    async fn remote_hosts_go_through_the_proxy_and_loopback_never_does() {
        let proxy = echo_line().await;
        let provider = echo_line().await;
        let env = |name: &str| match name {
            "HTTP_PROXY" => Some(proxy.clone()),
            "NO_PROXY" => Some("internal.example".into()),
            _ => None,
        };
        let client = proxies(env)
            .unwrap()
            .into_iter()
            .fold(
                reqwest::Client::builder().no_proxy(),
                reqwest::ClientBuilder::proxy,
            )
            .build()
            .unwrap();
        // A remote host is asked through the proxy: the request line names it.
        assert_eq!(
            get(&client, "http://api.provider.example/v1/models").await,
            "GET http://api.provider.example/v1/models HTTP/1.1"
        );
        // Loopback, which NO_PROXY does not list, is reached directly.
        assert_eq!(
            get(&client, &format!("{provider}/v1/models")).await,
            "GET /v1/models HTTP/1.1"
        );
        let localhost = provider.replace("127.0.0.1", "localhost");
        assert_eq!(
            get(&client, &format!("{localhost}/v1/models")).await,
            "GET /v1/models HTTP/1.1"
        );
    }

    #[test]
    fn no_proxy_in_the_environment_is_none_and_a_bad_one_is_an_error() {
        assert!(proxies(|_| None).unwrap().is_empty());
        assert!(proxies(|name| (name == "HTTPS_PROXY").then(|| "  ".into()))
            .unwrap()
            .is_empty());
        assert_eq!(
            proxies(|name| (name == "all_proxy").then(|| "http://proxy:3128".into()))
                .unwrap()
                .len(),
            2
        );
        assert!(proxies(|name| (name == "HTTP_PROXY").then(|| "::not a url::".into())).is_err());
    }
}
