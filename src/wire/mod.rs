//! The wire: HTTP listeners, the XML-RPC and JSON-RPC codecs, and the
//! dispatcher that turns a decoded call into an API call.

pub mod body;
pub mod dispatch;
pub mod http;
pub mod jsonrpc;
pub mod limits;
pub mod tls;
pub mod unproven;
pub mod xmlrpc;
