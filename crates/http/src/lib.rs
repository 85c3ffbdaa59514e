//! What the server and the apps share over HTTP, below both of them: the
//! one error type every handler answers with ([`ApiError`], whose
//! [`Kind`] decides the status), API keys and their scopes ([`Keys`]),
//! compressed request bodies ([`encoding`]), and the [`Slot`] an app's
//! routes find it in. The server mounts each app's `Router`; an app's
//! errors convert into [`ApiError`], which is the only error that becomes
//! a response.

pub mod auth;
pub mod encoding;
pub mod error;
mod slot;

pub use auth::{hash_token, new_token, ApiKey, Keys, Scope};
pub use error::{created_status, json_body, retry_secs, ApiError, Kind, DEFAULT_RETRY_AFTER};
pub use slot::{Admin, Ready, Slot};
