//! Bearer API tokens and their scopes (docs/api.md): no token or an
//! unknown one is 401, a token without the route's scope is 403.

use axum::http::{header, HeaderMap, StatusCode};

use super::error::ApiError;
use super::AppState;
use crate::store::{grants, Scope, TokenRecord};

/// The caller's token, if it grants `needed`.
pub async fn require(state: &AppState, headers: &HeaderMap, needed: Scope) -> Result<TokenRecord, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("an API token is required: Authorization: Bearer ta_…"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("the Authorization header must be `Bearer ta_…`"))?
        .to_string();
    let store = state.farm.store().clone();
    let record = tokio::task::spawn_blocking(move || crate::farm::lock(&store).api_token(&token)).await??;
    let record = record.ok_or_else(|| unauthorized("unknown or revoked API token"))?;
    if !grants(&record.scopes, needed) {
        let has: Vec<&str> = record.scopes.iter().map(|s| s.as_str()).collect();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("this token's scopes ({}) do not include {}", has.join(", "), needed.as_str()),
        ));
    }
    Ok(record)
}
