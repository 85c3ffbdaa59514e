//! API keys with scopes.
//!
//! A key is a random token (`tly_` + 64 hex digits, 256 bits) that the server
//! only knows by its SHA-256 hash. A fast hash is the right tool here: the
//! token is random, not a human password, so there is nothing to brute-force
//! that a slow hash would protect, and every request must be checked. The
//! presented token's hash is compared with every configured hash in constant
//! time, so neither the comparison nor the search order leaks which bytes
//! matched.

use crate::error::ApiError;
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Ingest,
    Read,
    Admin,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        match s.trim() {
            "ingest" => Some(Scope::Ingest),
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub name: String,
    /// SHA-256 of the token.
    pub hash: [u8; 32],
    pub scopes: Vec<Scope>,
}

impl ApiKey {
    /// Parses a stored hash, written `sha256:<64 hex digits>`.
    pub fn parse_hash(s: &str) -> Result<[u8; 32], String> {
        let hex_part = s
            .strip_prefix("sha256:")
            .ok_or("key hash must start with 'sha256:'")?;
        let bytes = hex::decode(hex_part).map_err(|e| format!("key hash is not hex: {e}"))?;
        bytes
            .try_into()
            .map_err(|_| "key hash must be 32 bytes (64 hex digits)".to_string())
    }
}

/// SHA-256 of a token, as stored: `sha256:<hex>`.
pub fn hash_token(token: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())))
}

/// A new random token.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("tly_{}", hex::encode(bytes))
}

#[derive(Debug, Clone, Default)]
pub struct Keys {
    keys: Vec<ApiKey>,
}

impl Keys {
    pub fn new(keys: Vec<ApiKey>) -> Self {
        Keys { keys }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks the request's `Authorization: Bearer` token for `scope`.
    /// With no keys configured the server is open (it then only listens on
    /// loopback unless explicitly allowed).
    pub fn authorize(&self, headers: &HeaderMap, scope: Scope) -> Result<(), ApiError> {
        if self.keys.is_empty() {
            return Ok(());
        }
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        self.authorize_token(token, scope)
    }

    /// Checks a key given some other way (InfluxDB's clients send it as
    /// `Token`, as a Basic password or as the `p` parameter) for `scope`.
    pub fn authorize_token(&self, token: Option<&str>, scope: Scope) -> Result<(), ApiError> {
        if self.keys.is_empty() {
            return Ok(());
        }
        let token = token.ok_or(ApiError::Unauthorized)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found: Option<&ApiKey> = None;
        for k in &self.keys {
            if bool::from(k.hash.ct_eq(&digest)) {
                found = Some(k);
            }
        }
        let key = found.ok_or(ApiError::Unauthorized)?;
        if key.scopes.contains(&scope) || key.scopes.contains(&Scope::Admin) {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                scope: scope.as_str(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_tokens_and_scopes() {
        let t = new_token();
        let key = ApiKey {
            name: "k".into(),
            hash: ApiKey::parse_hash(&hash_token(&t)).unwrap(),
            scopes: vec![Scope::Ingest],
        };
        let keys = Keys::new(vec![key]);
        let mut h = HeaderMap::new();
        assert!(matches!(
            keys.authorize(&h, Scope::Ingest),
            Err(ApiError::Unauthorized)
        ));
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
        assert!(keys.authorize(&h, Scope::Ingest).is_ok());
        assert!(matches!(
            keys.authorize(&h, Scope::Read),
            Err(ApiError::Forbidden { .. })
        ));
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer tly_wrong"),
        );
        assert!(matches!(
            keys.authorize(&h, Scope::Ingest),
            Err(ApiError::Unauthorized)
        ));
        assert!(ApiKey::parse_hash("md5:00").is_err());
    }
}
