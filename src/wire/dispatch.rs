//! The dispatcher: decodes an HTTP request body with the right codec, hands
//! the call to [`crate::api::invoke::invoke`], and encodes the answer in
//! the same protocol. Protocol specials live here: `system.listMethods`
//! (unwrapped in XML-RPC, as xapi sends it) and `system.isAlive`.

use bytes::Bytes;
use std::sync::Arc;

use crate::api::invoke::{invoke, list_methods};
use crate::api::{ApiError, Context, Origin, Value};
use crate::wire::http::{Peer, Protocol, RpcHandler, RpcRequest, RpcResponse};
use crate::wire::{jsonrpc, xmlrpc};

/// Most "call failed" lines logged in one second; past it they are
/// counted, and the count is logged once the second is over.
const FAILED_CALL_LINES_PER_SECOND: u32 = 20;

/// The log budget of failed calls: any client, signed in or not, can make
/// calls fail as fast as it can send them, and the log must not grow at
/// that rate.
#[derive(Debug, Default)]
struct FailureLog {
    /// The current second's start, the lines logged in it, and the
    /// failures not logged since the last report.
    window: std::sync::Mutex<Option<(std::time::Instant, u32, u64)>>,
}

impl FailureLog {
    /// Whether this failure is logged; `Some(n)` also when `n` earlier
    /// ones were not and should be reported now.
    fn admit(&self) -> (bool, Option<u64>) {
        self.admit_at(std::time::Instant::now())
    }

    fn admit_at(&self, now: std::time::Instant) -> (bool, Option<u64>) {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let (start, logged, suppressed) = window.get_or_insert((now, 0, 0));
        let mut report = None;
        if now.duration_since(*start) >= std::time::Duration::from_secs(1) {
            report = (*suppressed > 0).then_some(*suppressed);
            (*start, *logged, *suppressed) = (now, 0, 0);
        }
        if *logged < FAILED_CALL_LINES_PER_SECOND {
            *logged += 1;
            (true, report)
        } else {
            *suppressed += 1;
            (false, report)
        }
    }
}

/// The daemon's RPC handler.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    ctx: Arc<Context>,
    failures: Arc<FailureLog>,
}

impl Dispatcher {
    /// A dispatcher over the daemon state.
    pub fn new(ctx: Arc<Context>) -> Dispatcher {
        Dispatcher {
            ctx,
            failures: Arc::default(),
        }
    }

    async fn call(&self, method: &str, params: Vec<Value>, peer: &Peer) -> Reply {
        match method {
            "system.listMethods" => return Reply::Bare(Value::strings(list_methods())),
            _ if method.starts_with("system.isAlive") => {
                return Reply::Result(Ok(params.into_iter().next().unwrap_or_else(Value::void)));
            }
            _ => {}
        }
        let origin = origin_of(peer);
        let started = std::time::Instant::now();
        let result = invoke(&self.ctx, method, params, origin).await;
        match &result {
            Ok(_) => tracing::debug!(
                method,
                elapsed_us = started.elapsed().as_micros() as u64,
                "call"
            ),
            Err(e) => {
                let (log, unlogged) = self.failures.admit();
                if let Some(count) = unlogged {
                    tracing::warn!(
                        count,
                        "failed calls not logged one by one in the last second (more than {FAILED_CALL_LINES_PER_SECOND} a second)"
                    );
                }
                if log {
                    tracing::info!(method, error = e.code(), "call failed");
                }
            }
        }
        Reply::Result(result)
    }
}

enum Reply {
    Result(Result<Value, ApiError>),
    Bare(Value),
}

/// The task-result encoding xapi uses: an XML-RPC `<value>` fragment.
pub fn encode_task_result(value: &Value) -> String {
    let mut out = Vec::new();
    xmlrpc::write_value(value, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Bodies at least this long are parsed on the blocking pool: parsing
/// megabytes on a runtime thread would stall every other connection on it
/// (root's call on the Unix socket among them).
const PARSE_OFF_REACTOR_FROM: usize = 64 * 1024;

/// How many large bodies are decoded at once. A decoded value costs far
/// more than its text (about a kilobyte for a `<value>` of 15 bytes):
/// the decodes in flight, not the bodies read, are what a crowd of large
/// requests makes the daemon hold, so they wait for one of these.
const LARGE_DECODES: usize = 2;

/// `parse(body)`, on the blocking pool when the body is large (at most
/// [`LARGE_DECODES`] at once).
async fn off_reactor<T: Send + 'static>(body: &Bytes, parse: fn(&[u8]) -> T) -> T {
    static DECODING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(LARGE_DECODES);
    if body.len() < PARSE_OFF_REACTOR_FROM {
        return parse(body);
    }
    // The semaphore is never closed: a failure would be a bug, and the
    // parse then runs unthrottled rather than not at all.
    let _turn = DECODING.acquire().await.ok();
    let owned = body.clone();
    match tokio::task::spawn_blocking(move || parse(&owned)).await {
        Ok(parsed) => parsed,
        // The blocking pool is shutting down: parse here instead.
        Err(_) => parse(body),
    }
}

/// Where a call comes from, as the API layer names it.
fn origin_of(peer: &Peer) -> Origin {
    match peer {
        Peer::Tcp(addr) => Origin::Network(addr.to_string()),
        Peer::Unix { uid, .. } => Origin::Local(*uid),
    }
}

impl RpcHandler for Dispatcher {
    fn whoami(&self, session: &str, peer: &Peer) -> Option<(String, Vec<String>)> {
        crate::api::session_table::whoami(&self.ctx, session, origin_of(peer))
    }

    fn handle(
        &self,
        request: RpcRequest,
    ) -> std::pin::Pin<Box<dyn Future<Output = RpcResponse> + Send + '_>> {
        Box::pin(async move {
            match request.protocol {
                Protocol::XmlRpc => {
                    let body = match off_reactor(&request.body, xmlrpc::parse_call).await {
                        Ok(call) => match self.call(&call.method, call.params, &request.peer).await
                        {
                            Reply::Result(Ok(v)) => xmlrpc::success_body(&v),
                            Reply::Result(Err(e)) => xmlrpc::write_failure(&e.description()).into(),
                            Reply::Bare(v) => xmlrpc::write_bare(&v).into(),
                        },
                        Err(e) => {
                            tracing::info!("unparseable XML-RPC request: {e}");
                            xmlrpc::write_failure(
                                &ApiError::Internal(format!("XML-RPC request: {e}")).description(),
                            )
                            .into()
                        }
                    };
                    RpcResponse { body }
                }
                Protocol::JsonRpc => {
                    let body = match off_reactor(&request.body, jsonrpc::parse_request).await {
                        Ok(call) => match self.call(&call.method, call.params, &request.peer).await
                        {
                            Reply::Result(Ok(v)) | Reply::Bare(v) => {
                                jsonrpc::success_body(call.version, &call.id, &v)
                            }
                            Reply::Result(Err(e)) => {
                                jsonrpc::write_failure(call.version, &call.id, &e.description())
                                    .into()
                            }
                        },
                        Err(e) => {
                            tracing::info!("unparseable JSON-RPC request: {e}");
                            jsonrpc::write_parse_failure(&e).into()
                        }
                    };
                    RpcResponse { body }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_calls_are_logged_twenty_a_second_and_the_rest_counted() {
        let log = FailureLog::default();
        let t0 = std::time::Instant::now();
        let first: Vec<_> = (0..25).map(|_| log.admit_at(t0)).collect();
        assert!(
            first[..20]
                .iter()
                .all(|&(logged, report)| logged && report.is_none())
        );
        assert!(
            first[20..]
                .iter()
                .all(|&(logged, report)| !logged && report.is_none())
        );
        // The next second: its first failure is logged and reports the 5.
        let later = t0 + std::time::Duration::from_millis(1001);
        assert_eq!(log.admit_at(later), (true, Some(5)));
        assert_eq!(log.admit_at(later), (true, None));
    }
}
