//! Single-use tokens for streaming requests, as kubelet's request cache:
//! the Exec, Attach and PortForward RPCs store their request under a fresh
//! random token and return a URL naming it; the first HTTP request with the
//! token takes it out. Unused tokens expire after [`TTL`]; at most
//! [`MAX_IN_FLIGHT`] wait at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::{Error, Result};

/// How long a token stays valid (kubelet's streaming cache: one minute).
pub const TTL: Duration = Duration::from_secs(60);
/// How many unused tokens may wait at once.
pub const MAX_IN_FLIGHT: usize = 1000;

/// What a token stands for.
#[derive(Debug, Clone)]
pub enum Pending {
    Exec(bulkhead_proto::cri::ExecRequest),
    Attach(bulkhead_proto::cri::AttachRequest),
    PortForward(bulkhead_proto::cri::PortForwardRequest),
}

impl Pending {
    /// The URL path segment of its kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

#[derive(Debug, Default)]
pub struct Tokens {
    pending: Mutex<HashMap<String, (Pending, Instant)>>,
}

impl Tokens {
    /// Stores `request` and returns its token.
    pub fn insert(&self, request: Pending) -> Result<String> {
        let mut bytes = [0u8; 16];
        crate::pods::random_bytes(&mut bytes)?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        let mut pending = self.pending.lock().map_err(|_| Error::Internal("token cache poisoned".into()))?;
        pending.retain(|_, (_, expires)| *expires > now);
        if pending.len() >= MAX_IN_FLIGHT {
            return Err(Error::TooManyStreams { limit: MAX_IN_FLIGHT });
        }
        pending.insert(token.clone(), (request, now + TTL));
        Ok(token)
    }

    /// Takes the request stored under `token`, if it is there, unexpired,
    /// and of `kind`. A token of another kind is used up all the same.
    pub fn take(&self, token: &str, kind: &str) -> Option<Pending> {
        let mut pending = self.pending.lock().ok()?;
        let (request, expires) = pending.remove(token)?;
        (expires > Instant::now() && request.kind() == kind).then_some(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> Pending {
        Pending::Exec(bulkhead_proto::cri::ExecRequest { container_id: "c".into(), ..Default::default() })
    }

    #[test]
    fn tokens_are_single_use_and_typed() {
        let tokens = Tokens::default();
        let a = tokens.insert(exec()).unwrap();
        let b = tokens.insert(exec()).unwrap();
        assert_ne!(a, b);
        assert!(a.len() >= 22 && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert!(tokens.take(&a, "exec").is_some());
        assert!(tokens.take(&a, "exec").is_none(), "used twice");
        assert!(tokens.take(&b, "attach").is_none(), "wrong kind");
        assert!(tokens.take(&b, "exec").is_none(), "a wrong-kind try uses it up");
        assert!(tokens.take("nonsense", "exec").is_none());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let tokens = Tokens::default();
        let a = tokens.insert(exec()).unwrap();
        tokens.pending.lock().unwrap().get_mut(&a).unwrap().1 = Instant::now() - Duration::from_secs(1);
        assert!(tokens.take(&a, "exec").is_none());
    }

    #[test]
    fn in_flight_tokens_are_bounded() {
        let tokens = Tokens::default();
        for _ in 0..MAX_IN_FLIGHT {
            tokens.insert(exec()).unwrap();
        }
        let err = tokens.insert(exec()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    }
}
