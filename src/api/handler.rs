//! What a class module's custom-message handler is: [`Handler`], the
//! [`HandlerFuture`] it returns, and [`blocking`] to run its host work off
//! the reactor. A leaf: it names no class module, so the class modules and
//! [`invoke`](crate::api::invoke), which dispatches to them, both import it
//! without importing each other.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::api::context::{Caller, Context};
use crate::api::{ApiError, Value};

/// The future a message handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, ApiError>> + Send>>;

/// A custom-message handler: context, caller, decoded parameters.
pub type Handler = fn(Arc<Context>, Caller, Vec<Value>) -> HandlerFuture;

/// Run blocking work (file edits, fsync, child processes) off the reactor.
pub fn blocking<F>(ctx: Arc<Context>, work: F) -> HandlerFuture
where
    F: FnOnce(&Context) -> Result<Value, ApiError> + Send + 'static,
{
    Box::pin(async move {
        tokio::task::spawn_blocking(move || work(&ctx))
            .await
            .map_err(|_| ApiError::Internal("worker failed".into()))?
    })
}
