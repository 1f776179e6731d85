//! Errors of the HTTP API, rendered in OpenAI's error shape so SDKs surface them.

use axum::{
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

/// Most characters of a caller's text (a path, a header, a name) an error echoes.
const MAX_ECHOED: usize = 200;

/// `text` as an error names it, cut at [`MAX_ECHOED`] characters: what a caller
/// sends can be long, and the error must stay small.
pub(super) fn echoed(text: &str) -> String {
    match text.char_indices().nth(MAX_ECHOED) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// An error answer: status, OpenAI error type, optional offending parameter, message.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI's `error.type` (`invalid_request_error`, `server_error`, …).
    pub kind: &'static str,
    /// OpenAI's `error.code`, when there is a stable one.
    pub code: Option<&'static str>,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    /// What went wrong, naming the problem.
    pub message: String,
    /// Headers the answer carries besides its body (`Retry-After`,
    /// `WWW-Authenticate`); boxed, as almost no error has any.
    pub headers: Option<Box<HeaderMap>>,
}

impl ApiError {
    /// A 400 about the request, naming the parameter at fault.
    pub fn invalid(param: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: None,
            param: param.map(str::to_string),
            message: message.into(),
            headers: None,
        }
    }
}

impl ApiError {
    /// A 401 for a missing or wrong admin token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            kind: "authentication_error",
            code: Some("invalid_admin_token"),
            param: None,
            message: message.into(),
            headers: None,
        }
    }

    /// A 404 for something that does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: Some("not_found"),
            param: None,
            message: message.into(),
            headers: None,
        }
    }

    /// A 405 for a method a route does not take (axum adds `Allow`).
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            kind: "invalid_request_error",
            code: Some("method_not_allowed"),
            param: None,
            message: message.into(),
            headers: None,
        }
    }

    /// A 415 for a request body in an encoding the gateway does not read
    /// (`Content-Encoding: gzip`, say), naming it: read as JSON it would only be
    /// called "not valid JSON", which sends the caller looking in the wrong place.
    pub fn unsupported_encoding(encoding: &str) -> Self {
        let encoding = echoed(encoding);
        Self {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            kind: "invalid_request_error",
            code: Some("unsupported_content_encoding"),
            param: None,
            message: format!(
                "request bodies are read uncompressed; Content-Encoding {encoding:?} is not supported"
            ),
            headers: None,
        }
    }

    /// A 408 for a request body that did not arrive whole in time.
    pub fn late_body() -> Self {
        Self {
            status: StatusCode::REQUEST_TIMEOUT,
            kind: "invalid_request_error",
            code: Some("request_timeout"),
            param: None,
            message: "the request body did not arrive in time".into(),
            headers: None,
        }
    }

    /// A 422 for a well-formed body with an invalid value, naming the field.
    pub fn unprocessable(field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            kind: "invalid_request_error",
            code: Some("invalid_value"),
            param: field.map(str::to_string),
            message: message.into(),
            headers: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(headers) = self.headers {
            response.headers_mut().extend(*headers);
        }
        response
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        let late = std::iter::successors(std::error::Error::source(&rejection), |e| e.source())
            .any(|e| e.is::<super::bodies::DeadlinePassed>());
        if late {
            return Self::late_body();
        }
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body is larger than the configured limit".to_string()
        } else {
            rejection.body_text()
        };
        Self {
            status,
            kind: "invalid_request_error",
            code: (status == StatusCode::PAYLOAD_TOO_LARGE).then_some("request_too_large"),
            param: None,
            message,
            headers: None,
        }
    }
}

impl From<crate::gateway::faults::FaultError> for ApiError {
    fn from(err: crate::gateway::faults::FaultError) -> Self {
        use crate::gateway::faults::FaultError;
        match &err {
            FaultError::UnknownProvider(_) => Self::not_found(err.to_string()),
            FaultError::Invalid { field, .. } => Self::unprocessable(Some(field), err.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        tracing::error!(error = %err, "audit store query failed");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "server_error",
            code: None,
            param: None,
            message: "the audit store could not be read".into(),
            headers: None,
        }
    }
}

impl From<crate::gateway::GatewayError> for ApiError {
    fn from(err: crate::gateway::GatewayError) -> Self {
        use crate::gateway::GatewayError;
        match err {
            GatewayError::BadRequest { param, message } => Self::invalid(Some(&param), message),
            GatewayError::UnknownModel(model) => Self {
                status: StatusCode::NOT_FOUND,
                kind: "invalid_request_error",
                code: Some("model_not_found"),
                param: Some("model".into()),
                message: format!(
                    "The model {:?} does not exist; GET /v1/models lists the models",
                    echoed(&model)
                ),
                headers: None,
            },
            GatewayError::Rejected {
                provider,
                status,
                message,
            } => Self {
                status: StatusCode::from_u16(status)
                    .ok()
                    .filter(StatusCode::is_client_error)
                    .unwrap_or(StatusCode::BAD_REQUEST),
                kind: "invalid_request_error",
                code: None,
                param: None,
                message: format!("{provider} rejected the request: {message}"),
                headers: None,
            },
        }
    }
}
