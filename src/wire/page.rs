//! The page on the host: the files of a small browser UI at `/`, embedded
//! in the binary, and the four JSON endpoints under `/ui/` it talks to.
//!
//! The page holds no secret. Logging in (`POST /ui/login`) goes through
//! `session.login_with_password` like any client, with the same throttle,
//! PAM or users file and roles; the session ref is then kept in a cookie
//! the page's script cannot read (`HttpOnly`, `SameSite=Strict`, `Secure`
//! over TLS). Every call the page makes (`POST /ui/rpc`) is a XenAPI
//! JSON-RPC call with the cookie's session put first: it can do nothing
//! the API would refuse that session. A state change must carry a token
//! derived from the session (`X-CSRF-Token`), which only a page of this
//! origin can have read, and any POST a browser marks as coming from
//! another site is refused before its body is read ([`cross_site`]).

use std::sync::OnceLock;

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use sha2::{Digest, Sha256};

use super::body::ReplyBody;
use super::http::{Peer, Protocol, RpcHandler, RpcRequest};

/// The cookie that holds the page's session ref.
pub const COOKIE: &str = "pcipass_session";

/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What the page's replies allow the browser to load: its own files only,
/// no inline script or style, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The embedded files: path, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("page/index.html"),
    ),
    (
        "/ui/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("page/app.js"),
    ),
    (
        "/ui/app.css",
        "text/css; charset=utf-8",
        include_bytes!("page/app.css"),
    ),
];

/// Whether `path` is the page's: its files or its endpoints.
pub fn is_page(path: &str) -> bool {
    path == "/" || path.starts_with("/ui/")
}

/// The reply to a GET of the page's files, `None` for another path.
pub fn asset(path: &str) -> Option<Response<ReplyBody>> {
    if path == "/favicon.ico" {
        // Browsers ask for it unbidden: no icon, and no 404 in their log.
        return Some(reply(StatusCode::NO_CONTENT, "text/plain", ""));
    }
    let (_, kind, bytes) = ASSETS.iter().find(|(p, _, _)| *p == path)?;
    Some(reply(
        StatusCode::OK,
        kind,
        ReplyBody::from_chunks([Bytes::from_static(bytes)]),
    ))
}

/// A reply with the page's security headers.
fn reply(
    status: StatusCode,
    kind: &'static str,
    body: impl Into<ReplyBody>,
) -> Response<ReplyBody> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<ReplyBody> {
    reply(
        status,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

fn refused(why: &'static str) -> Response<ReplyBody> {
    reply(StatusCode::FORBIDDEN, "text/plain; charset=utf-8", why)
}

/// Why a request a browser sent from another site is refused, `None` for
/// one from the page's own origin or from a client that is no browser.
/// Browsers send `Sec-Fetch-Site` (and `Origin` on every cross-origin
/// POST); API clients send neither, and keep working.
pub fn cross_site(method: &Method, headers: &HeaderMap) -> Option<&'static str> {
    if method != Method::POST {
        return None;
    }
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Some("refused: a request from another site\n");
    }
    match (text("origin"), text("host")) {
        (None, _) => None,
        (Some(origin), Some(host)) if same_origin(origin, host) => None,
        _ => Some("refused: a request from another origin\n"),
    }
}

/// Whether the `Origin` header `origin` names the host the request was
/// sent to (`Host`), over http or https.
fn same_origin(origin: &str, host: &str) -> bool {
    origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
}

/// The key the CSRF tokens are derived with, new at every start.
fn key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(rand::random)
}

/// The CSRF token of `session`: a keyed hash no other site can compute
/// or read.
pub fn csrf_token(session: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(key());
    hash.update(session.as_bytes());
    hash.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The session ref in the request's cookie.
fn session_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|value| value.starts_with("OpaqueRef:") && value.len() <= 64)
}

fn cookie(value: &str, secure: bool, max_age: Option<u32>) -> HeaderValue {
    let mut text = format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict");
    if secure {
        text.push_str("; Secure");
    }
    if let Some(age) = max_age {
        text.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// One request to an endpoint of the page, its body already read.
#[derive(Debug)]
pub struct PageRequest<'a> {
    /// The path, under `/ui/`.
    pub path: &'a str,
    /// Its headers.
    pub headers: &'a HeaderMap,
    /// Its body.
    pub body: Bytes,
    /// The caller.
    pub peer: Peer,
    /// Whether the connection is TLS (the cookie is then `Secure`).
    pub tls: bool,
}

/// Answer a POST to one of the page's endpoints (or a GET of
/// `/ui/session`).
pub async fn endpoint(request: PageRequest<'_>, handler: &dyn RpcHandler) -> Response<ReplyBody> {
    match request.path {
        "/ui/login" if request.body.is_empty() => json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": ["INVALID_VALUE", "body", ""]}),
        ),
        "/ui/login" => login(&request, handler).await,
        "/ui/session" => match session_of(request.headers) {
            Some(session) => me(&session, &request, handler, None),
            None => session_invalid(),
        },
        "/ui/rpc" | "/ui/logout" => {
            let Some(session) = session_of(request.headers) else {
                return session_invalid();
            };
            let token = request
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok());
            if token != Some(csrf_token(&session).as_str()) {
                return refused("refused: no valid CSRF token\n");
            }
            if request.path == "/ui/logout" {
                let _ = call(
                    handler,
                    &request.peer,
                    "session.logout",
                    vec![session.into()],
                )
                .await;
                let mut response = reply(StatusCode::NO_CONTENT, "text/plain", "");
                response
                    .headers_mut()
                    .insert(header::SET_COOKIE, cookie("", request.tls, Some(0)));
                return response;
            }
            rpc(&session, &request, handler).await
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// A XenAPI call through the handler, as JSON-RPC 2.0; the encoded reply.
async fn dispatch(
    handler: &dyn RpcHandler,
    peer: &Peer,
    method: &str,
    params: Vec<serde_json::Value>,
) -> ReplyBody {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    handler
        .handle(RpcRequest {
            protocol: Protocol::JsonRpc,
            path: "/jsonrpc".into(),
            peer: peer.clone(),
            body: serde_json::to_vec(&body).unwrap_or_default().into(),
        })
        .await
        .body
}

/// [`dispatch`], the reply decoded.
async fn call(
    handler: &dyn RpcHandler,
    peer: &Peer,
    method: &str,
    params: Vec<serde_json::Value>,
) -> serde_json::Value {
    let reply = dispatch(handler, peer, method, params).await;
    serde_json::from_slice(&reply.to_vec()).unwrap_or(serde_json::Value::Null)
}

/// The answer for a request without a live session.
fn session_invalid() -> Response<ReplyBody> {
    json(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({"error": ["SESSION_INVALID"]}),
    )
}

/// The XenAPI ErrorDescription of a failed JSON-RPC 2.0 reply.
fn error_description(reply: &serde_json::Value) -> Vec<serde_json::Value> {
    let error = &reply["error"];
    let mut description = vec![error["message"].clone()];
    if let Some(data) = error["data"].as_array() {
        description.extend(data.iter().cloned());
    }
    description
}

async fn login(request: &PageRequest<'_>, handler: &dyn RpcHandler) -> Response<ReplyBody> {
    #[derive(serde::Deserialize)]
    struct Form {
        user: String,
        password: String,
    }
    let Ok(form) = serde_json::from_slice::<Form>(&request.body) else {
        return json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": ["INVALID_VALUE", "body", "{\"user\": ..., \"password\": ...}"]}),
        );
    };
    let params = vec![
        form.user.into(),
        form.password.into(),
        "2.21".into(),
        "pcipass page".into(),
    ];
    let reply = call(
        handler,
        &request.peer,
        "session.login_with_password",
        params,
    )
    .await;
    match reply["result"].as_str() {
        Some(session) => me(
            session,
            request,
            handler,
            Some(cookie(session, request.tls, None)),
        ),
        None => {
            let description = error_description(&reply);
            let status = match description[0].as_str() {
                Some("SESSION_AUTHENTICATION_THROTTLED") => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::UNAUTHORIZED,
            };
            json(status, &serde_json::json!({"error": description}))
        }
    }
}

/// Who the session is, and its CSRF token; with `set`, the cookie too.
fn me(
    session: &str,
    request: &PageRequest<'_>,
    handler: &dyn RpcHandler,
    set: Option<HeaderValue>,
) -> Response<ReplyBody> {
    let Some((user, permissions)) = handler.whoami(session, &request.peer) else {
        let mut response = session_invalid();
        response
            .headers_mut()
            .insert(header::SET_COOKIE, cookie("", request.tls, Some(0)));
        return response;
    };
    let mut response = json(
        StatusCode::OK,
        &serde_json::json!({"user": user, "csrf": csrf_token(session), "permissions": permissions}),
    );
    if let Some(set) = set {
        response.headers_mut().insert(header::SET_COOKIE, set);
    }
    response
}

/// `{"method": ..., "params": [...]}` called with the session put first;
/// the JSON-RPC reply as the API gives it.
async fn rpc(
    session: &str,
    request: &PageRequest<'_>,
    handler: &dyn RpcHandler,
) -> Response<ReplyBody> {
    #[derive(serde::Deserialize)]
    struct Call {
        method: String,
        #[serde(default)]
        params: Vec<serde_json::Value>,
    }
    let Ok(call) = serde_json::from_slice::<Call>(&request.body) else {
        return json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": ["INVALID_VALUE", "body", "{\"method\": ..., \"params\": [...]}"]}),
        );
    };
    let mut params = vec![serde_json::Value::from(session)];
    params.extend(call.params);
    let answer = dispatch(handler, &request.peer, &call.method, params).await;
    reply(StatusCode::OK, "application/json", answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn posts_a_browser_marks_as_cross_site_are_refused() {
        // (headers, refused)
        let cases: &[(&[(&'static str, &'static str)], bool)] = &[
            (&[], false),
            (&[("host", "h:8443")], false),
            (&[("host", "h:8443"), ("origin", "https://h:8443")], false),
            (&[("host", "h:8443"), ("origin", "http://H:8443")], false),
            (
                &[("host", "h:8443"), ("origin", "https://evil.example")],
                true,
            ),
            (
                &[("host", "h:8443"), ("origin", "https://h:8443.evil")],
                true,
            ),
            (&[("host", "h:8443"), ("origin", "null")], true),
            (&[("origin", "https://h:8443")], true),
            (&[("sec-fetch-site", "same-origin")], false),
            (&[("sec-fetch-site", "none")], false),
            (&[("sec-fetch-site", "cross-site")], true),
            (&[("sec-fetch-site", "same-site")], true),
        ];
        for (pairs, want) in cases {
            let got = cross_site(&Method::POST, &headers(pairs)).is_some();
            assert_eq!(got, *want, "{pairs:?}");
            assert!(cross_site(&Method::GET, &headers(pairs)).is_none());
        }
    }

    #[test]
    fn the_session_comes_from_its_cookie_only() {
        let h = headers(&[("cookie", "a=b; pcipass_session=OpaqueRef:1234; c=d")]);
        assert_eq!(session_of(&h).as_deref(), Some("OpaqueRef:1234"));
        for bad in [
            "pcipass_session=1234",
            "other=OpaqueRef:1",
            "pcipass_sessionx=OpaqueRef:1",
        ] {
            let h = headers(&[("cookie", bad)]);
            assert_eq!(session_of(&h), None, "{bad}");
        }
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_stay_put() {
        let (a, b) = (csrf_token("OpaqueRef:a"), csrf_token("OpaqueRef:b"));
        assert_ne!(a, b);
        assert_eq!(a, csrf_token("OpaqueRef:a"));
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_over_tls() {
        let c = cookie("OpaqueRef:x", true, None);
        let text = c.to_str().unwrap();
        for part in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(text.contains(part), "{text}");
        }
        assert!(
            !cookie("OpaqueRef:x", false, None)
                .to_str()
                .unwrap()
                .contains("Secure")
        );
    }

    #[test]
    fn every_asset_carries_the_policy() {
        for (path, _, _) in ASSETS {
            let response = asset(path).unwrap();
            let h = response.headers();
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP);
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        }
        assert!(asset("/ui/../Cargo.toml").is_none());
    }
}
