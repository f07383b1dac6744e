//! The wire: HTTP listeners, the XML-RPC and JSON-RPC codecs, and the
//! dispatcher that turns a decoded call into an API call.

pub mod body;
pub mod dispatch;
pub mod http;
pub mod jsonrpc;
pub mod limits;
pub mod page;
pub mod tls;
pub mod unproven;
pub mod xmlrpc;

/// The most values (scalars, arrays, structs and their members) one
/// request may hold. Decoding costs about a kilobyte a value, whatever
/// its text, and the allocator keeps much of it afterwards: 2 MB bodies
/// of 60 000 tiny strings left the daemon 50 MiB larger for good. No
/// XenAPI call needs more than a few thousand (a map holds 512 keys,
/// `event.register` 64 classes); the codecs count before they decode and
/// refuse a request over this.
pub const MAX_VALUES: usize = 16_384;
