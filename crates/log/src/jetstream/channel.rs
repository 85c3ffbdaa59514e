//! Requests to the node doing one kind of work for the whole cluster: a
//! NATS subject that only that node listens on (a queue group, so a
//! request reaches one listener), and requests from any node, of either
//! region (the subject crosses leaf nodes).

use std::time::Duration;

/// A channel to the one node that serves it (see the module comment).
#[derive(Clone)]
pub struct Channel {
    client: async_nats::Client,
    subject: String,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No node listens now (none holds the work, or it is taking over):
    /// the request surely reached nobody.
    #[error("no node serves {0} now")]
    NoListener(String),
    /// No answer in time: the request may have been carried out.
    #[error("no answer from the node serving {subject} within {timeout:?}")]
    TimedOut { subject: String, timeout: Duration },
    #[error("requesting {subject}: {message}")]
    Failed { subject: String, message: String },
}

/// One request received, to answer with [`Request::answer`].
pub struct Request {
    pub payload: bytes::Bytes,
    reply: Option<async_nats::Subject>,
    client: async_nats::Client,
}

impl Request {
    pub async fn answer(self, payload: Vec<u8>) {
        if let Some(reply) = self.reply {
            if let Err(e) = self.client.publish(reply, payload.into()).await {
                tracing::warn!(error = %e, "answering a cluster request");
            }
        }
    }
}

/// The requests a listening node receives; dropping it stops listening.
pub struct Listener {
    subscriber: async_nats::Subscriber,
    client: async_nats::Client,
}

impl Listener {
    /// The next request (`None` once the connection is closed).
    pub async fn next(&mut self) -> Option<Request> {
        use futures::StreamExt;
        let m = self.subscriber.next().await?;
        Some(Request {
            payload: m.payload,
            reply: m.reply,
            client: self.client.clone(),
        })
    }
}

impl Channel {
    pub(super) fn new(client: async_nats::Client, subject: String) -> Channel {
        Channel { client, subject }
    }

    /// Sends `payload` to the listening node and waits up to `timeout` for
    /// its answer.
    pub async fn call(
        &self,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<bytes::Bytes, CallError> {
        use async_nats::client::RequestErrorKind;
        let request = async_nats::Request::new()
            .payload(payload.into())
            .timeout(Some(timeout));
        match self
            .client
            .send_request(self.subject.clone(), request)
            .await
        {
            Ok(m) => Ok(m.payload),
            Err(e) => Err(match e.kind() {
                RequestErrorKind::NoResponders => CallError::NoListener(self.subject.clone()),
                RequestErrorKind::TimedOut => CallError::TimedOut {
                    subject: self.subject.clone(),
                    timeout,
                },
                _ => CallError::Failed {
                    subject: self.subject.clone(),
                    message: e.to_string(),
                },
            }),
        }
    }

    /// Starts listening. Only the node doing the work listens: stop (drop
    /// the listener) as soon as it no longer does.
    pub async fn listen(&self) -> Result<Listener, String> {
        let subscriber = self
            .client
            .queue_subscribe(self.subject.clone(), "tally".into())
            .await
            .map_err(|e| format!("listening on {}: {e}", self.subject))?;
        // The subscription is known to the server before anyone is told
        // this node listens.
        self.client
            .flush()
            .await
            .map_err(|e| format!("listening on {}: {e}", self.subject))?;
        Ok(Listener {
            subscriber,
            client: self.client.clone(),
        })
    }
}
