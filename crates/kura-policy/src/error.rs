//! Why a policy document was rejected. The `Display` text is written to be returned as the
//! message of a `MalformedPolicyDocument` error, so it reads like AWS's and names the place.

/// A policy document that cannot be accepted. `at` names the statement, e.g.
/// `Statement 2 (Sid "AllowUse")`, or `Policy` for the document itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("Syntax errors in policy. {0}")]
    Syntax(String),
    #[error("Policy document must be a JSON object.")]
    NotAnObject,
    #[error("The policy failed legacy parsing: unsupported Version {0}; use \"2012-10-17\".")]
    InvalidVersion(String),
    #[error("Policy document must contain at least one statement.")]
    NoStatements,
    #[error("Statement IDs (SID) in a single policy must be unique: {0:?} appears more than once.")]
    DuplicateSid(String),
    #[error("{at}: Unknown field {field}")]
    UnknownField { at: String, field: String },
    #[error("{at}: Missing required field {field}")]
    MissingField { at: String, field: &'static str },
    #[error("{at}: Has prohibited field {field}")]
    ProhibitedField { at: String, field: &'static str },
    #[error("{at}: {first} and {second} cannot be used together")]
    ConflictingFields {
        at: String,
        first: &'static str,
        second: &'static str,
    },
    #[error("{at}: Policy document should not specify a principal.")]
    PrincipalNotAllowed { at: String },
    #[error("{at}: Invalid principal in policy: {value}")]
    InvalidPrincipal { at: String, value: String },
    #[error("{at}: Invalid {element}: {reason}")]
    InvalidElement {
        at: String,
        element: &'static str,
        reason: String,
    },
    #[error("{at}: Invalid Condition: {reason}")]
    InvalidCondition { at: String, reason: String },
}
