//! `GET /rates?date_from=YYYY-MM-DD&date_to=YYYY-MM-DD&origin=X&destination=Y`.

use super::RatesApp;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::collections::HashMap;
use std::sync::Arc;
use tally_http::ApiError;

/// Where the service is, once the query engine is up.
pub type Slot = Arc<tally_http::Slot<RatesApp>>;

/// The rates routes, for any router state.
pub fn routes<S: Clone + Send + Sync + 'static>(slot: Slot) -> Router<S> {
    Router::new().route("/rates", get(rates)).with_state(slot)
}

async fn rates(
    State(slot): State<Slot>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let app = slot.app()?;
    let p = |name: &str| params.get(name).map(String::as_str);
    let q = app.question(p("date_from"), p("date_to"), p("origin"), p("destination"))?;
    let days = app.answer(&q).await?;
    Ok(([(header::CACHE_CONTROL, "no-cache")], Json(&*days)).into_response())
}
