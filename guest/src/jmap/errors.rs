//! RFC 8620 method-level errors (§3.6.2) and SetErrors (§5.3).

use crate::json::{Map, Value};
use std::fmt;

use crate::ports::StoreError;
use crate::subscription::InvalidProperty;

/// Method-level error types the plugin returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodErrorType {
    /// `unknownMethod`
    UnknownMethod,
    /// `invalidArguments`
    InvalidArguments,
    /// `invalidResultReference`
    InvalidResultReference,
    /// `forbidden`
    Forbidden,
    /// `requestTooLarge`
    RequestTooLarge,
    /// `serverFail`
    ServerFail,
    /// `serverUnavailable`
    ServerUnavailable,
}

impl MethodErrorType {
    /// The JMAP `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            MethodErrorType::UnknownMethod => "unknownMethod",
            MethodErrorType::InvalidArguments => "invalidArguments",
            MethodErrorType::InvalidResultReference => "invalidResultReference",
            MethodErrorType::Forbidden => "forbidden",
            MethodErrorType::RequestTooLarge => "requestTooLarge",
            MethodErrorType::ServerFail => "serverFail",
            MethodErrorType::ServerUnavailable => "serverUnavailable",
        }
    }
}

/// A method-level error with a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodError {
    /// The type.
    pub kind: MethodErrorType,
    /// What went wrong, for a human.
    pub description: String,
}

impl MethodError {
    /// A new error.
    pub fn new(kind: MethodErrorType, description: impl Into<String>) -> Self {
        MethodError {
            kind,
            description: description.into(),
        }
    }

    /// `invalidArguments`.
    pub fn invalid_arguments(description: impl Into<String>) -> Self {
        Self::new(MethodErrorType::InvalidArguments, description)
    }
}

impl From<StoreError> for MethodError {
    fn from(e: StoreError) -> Self {
        // B9: store failures are `serverFail` (the description says which).
        MethodError::new(MethodErrorType::ServerFail, e.to_string())
    }
}

impl fmt::Display for MethodError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.description)
    }
}

impl std::error::Error for MethodError {}

/// SetError types (RFC 8620 §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetErrorType {
    /// `forbidden`
    Forbidden,
    /// `overQuota`
    OverQuota,
    /// `rateLimit`
    RateLimit,
    /// `notFound`
    NotFound,
    /// `invalidPatch`
    InvalidPatch,
    /// `willDestroy`
    WillDestroy,
    /// `invalidProperties`
    InvalidProperties,
    /// `serverFail`
    ServerFail,
    /// `tooLarge` (RFC 8620 §5.3): the object would exceed a limit, here
    /// the store's largest value.
    TooLarge,
}

impl SetErrorType {
    /// The JMAP `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            SetErrorType::Forbidden => "forbidden",
            SetErrorType::OverQuota => "overQuota",
            SetErrorType::RateLimit => "rateLimit",
            SetErrorType::NotFound => "notFound",
            SetErrorType::InvalidPatch => "invalidPatch",
            SetErrorType::WillDestroy => "willDestroy",
            SetErrorType::InvalidProperties => "invalidProperties",
            SetErrorType::ServerFail => "serverFail",
            SetErrorType::TooLarge => "tooLarge",
        }
    }
}

/// A SetError for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetError {
    /// The type.
    pub kind: SetErrorType,
    /// What went wrong, for a human.
    pub description: String,
    /// For `invalidProperties`: the properties at fault.
    pub properties: Vec<String>,
    /// For a duplicate deviceClientId: the subscription that holds it.
    pub existing_id: Option<String>,
}

impl SetError {
    /// A SetError without properties.
    pub fn new(kind: SetErrorType, description: impl Into<String>) -> Self {
        SetError {
            kind,
            description: description.into(),
            properties: Vec::new(),
            existing_id: None,
        }
    }

    /// `invalidProperties` naming one property.
    pub fn invalid_property(property: &str, description: impl Into<String>) -> Self {
        SetError {
            kind: SetErrorType::InvalidProperties,
            description: description.into(),
            properties: vec![property.to_string()],
            existing_id: None,
        }
    }

    /// `notFound`.
    pub fn not_found(id: &str) -> Self {
        Self::new(
            SetErrorType::NotFound,
            format!("no PushSubscription {id:?}"),
        )
    }

    /// The SetError object.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), Value::from(self.kind.as_str()));
        m.insert("description".into(), Value::from(self.description.as_str()));
        if !self.properties.is_empty() {
            m.insert("properties".into(), Value::from(self.properties.clone()));
        }
        if let Some(id) = &self.existing_id {
            m.insert("existingId".into(), Value::from(id.as_str()));
        }
        Value::Object(m)
    }
}

impl From<InvalidProperty> for SetError {
    fn from(e: InvalidProperty) -> Self {
        let description = e.to_string();
        SetError::invalid_property(&e.property, description)
    }
}

/// Every invalid property of one object in one `invalidProperties` error:
/// `properties` names them all, the description gives each reason.
impl From<Vec<InvalidProperty>> for SetError {
    fn from(errors: Vec<InvalidProperty>) -> Self {
        let description = errors
            .iter()
            .map(InvalidProperty::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let mut properties: Vec<String> = Vec::with_capacity(errors.len());
        for e in errors {
            if !properties.contains(&e.property) {
                properties.push(e.property);
            }
        }
        SetError {
            kind: SetErrorType::InvalidProperties,
            description,
            properties,
            existing_id: None,
        }
    }
}

impl From<StoreError> for SetError {
    fn from(e: StoreError) -> Self {
        match e {
            // Permanent for this object: repeating the same change fails
            // the same way.
            StoreError::TooLarge => SetError::new(
                SetErrorType::TooLarge,
                "the PushSubscription would be larger than the store accepts",
            ),
            other => SetError::new(SetErrorType::ServerFail, other.to_string()),
        }
    }
}

impl fmt::Display for SetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.description)
    }
}

impl std::error::Error for SetError {}
