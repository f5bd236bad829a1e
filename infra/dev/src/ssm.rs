//! The SSM Parameter Store stand-in: `PutParameter`, `GetParameter`, `GetParameters` and
//! `DeleteParameter` (AWS JSON 1.1, `X-Amz-Target: AmazonSSM.*`, AWS's error types such as
//! `ParameterNotFound`), kept in a table of the dev SQLite file. So locally
//! `aws ssm put-parameter --endpoint-url http://127.0.0.1:8288 --type SecureString ...` stores a
//! secret that a function under `cargo lambda watch` reads with the AWS SDK (its
//! `AWS_ENDPOINT_URL` is the dev server). Values are returned only by `GetParameter(s)`, a
//! `SecureString` only `WithDecryption`; nothing else (event log, dashboard, logs) shows them.

use crate::DevError;
use crate::wire::{ACCOUNT, json11_error};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn::Millis;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dev_parameters (
    name        TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    value       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    modified_at INTEGER NOT NULL
);
";

/// The longest value of a Standard-tier parameter.
pub const MAX_VALUE_CHARS: usize = 4096;
/// The most names one `GetParameters` takes.
pub const MAX_NAMES: usize = 10;
const TYPES: [&str; 3] = ["String", "StringList", "SecureString"];

/// One stored parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Parameter {
    name: String,
    kind: String,
    value: String,
    version: i64,
    modified_at: Millis,
}

/// The parameters, on their own connection to the dev SQLite file.
#[derive(Clone, Debug)]
pub struct ParameterStore {
    connection: Arc<Mutex<Connection>>,
}

fn sql_err(err: rusqlite::Error) -> DevError {
    DevError::with_source(format!("dev database: {err}"), err)
}

type Outcome = Result<Value, Response>;

fn validation(message: impl Into<String>) -> Response {
    json11_error(StatusCode::BAD_REQUEST, "ValidationException", message)
}

fn internal(error: DevError) -> Response {
    json11_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", error.to_string())
}

fn not_found(name: &str) -> Response {
    json11_error(StatusCode::BAD_REQUEST, "ParameterNotFound", format!("Parameter {name} not found."))
}

impl ParameterStore {
    /// Opens (creating) the parameters table in the SQLite file at `path`.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open(path: &str) -> Result<ParameterStore, DevError> {
        let connection = Connection::open(path).map_err(sql_err)?;
        connection.busy_timeout(Duration::from_secs(10)).map_err(sql_err)?;
        connection.execute_batch(SCHEMA).map_err(sql_err)?;
        Ok(ParameterStore { connection: Arc::new(Mutex::new(connection)) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, name: &str) -> Result<Option<Parameter>, DevError> {
        self.lock()
            .query_row(
                "SELECT name, type, value, version, modified_at FROM dev_parameters WHERE name = ?1",
                params![name],
                |row| {
                    Ok(Parameter {
                        name: row.get(0)?,
                        kind: row.get(1)?,
                        value: row.get(2)?,
                        version: row.get(3)?,
                        modified_at: row.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(sql_err)
    }

    /// The parameters' names, types and versions, never their values.
    ///
    /// # Errors
    /// A database error.
    pub fn list(&self) -> Result<Vec<Value>, DevError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare("SELECT name, type, version, modified_at FROM dev_parameters ORDER BY name")
            .map_err(sql_err)?;
        statement
            .query_map([], |row| {
                Ok(json!({"name": row.get::<_, String>(0)?, "type": row.get::<_, String>(1)?,
                    "version": row.get::<_, i64>(2)?, "modified_at": row.get::<_, i64>(3)?}))
            })
            .map_err(sql_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql_err)
    }

    /// `AmazonSSM.<operation>` with the request body `request`.
    pub fn handle(&self, operation: &str, request: &Value, region: &str, now: Millis) -> Response {
        let result = match operation {
            "PutParameter" => self.put(request, now),
            "GetParameter" => self.get_one(request, region),
            "GetParameters" => self.get_many(request, region),
            "DeleteParameter" => self.delete(request),
            other => Err(json11_error(
                StatusCode::BAD_REQUEST,
                "UnknownOperationException",
                format!(
                    "the dev server does not implement AmazonSSM.{other}; it serves PutParameter, GetParameter, GetParameters and DeleteParameter"
                ),
            )),
        };
        match result {
            Ok(body) => {
                (StatusCode::OK, [("content-type", "application/x-amz-json-1.1")], body.to_string()).into_response()
            }
            Err(response) => response,
        }
    }

    fn put(&self, request: &Value, now: Millis) -> Outcome {
        let name = required_name(request)?;
        let Some(value) = request["Value"].as_str() else {
            return Err(null_member("value"));
        };
        if value.is_empty() {
            return Err(validation(
                "1 validation error detected: Value '' at 'value' failed to satisfy constraint: Member must have length greater than or equal to 1.",
            ));
        }
        if value.chars().count() > MAX_VALUE_CHARS {
            return Err(validation(format!(
                "Standard tier parameters support a maximum parameter value of {MAX_VALUE_CHARS} characters."
            )));
        }
        let kind = request["Type"].as_str();
        if let Some(kind) = kind.filter(|k| !TYPES.contains(k)) {
            return Err(validation(format!(
                "1 validation error detected: Value '{kind}' at 'type' failed to satisfy constraint: Member must satisfy enum value set: [SecureString, StringList, String]"
            )));
        }
        let overwrite = request["Overwrite"].as_bool().unwrap_or(false);
        let existing = self.get(name).map_err(internal)?;
        let version = match (&existing, overwrite) {
            (Some(_), false) => {
                return Err(json11_error(
                    StatusCode::BAD_REQUEST,
                    "ParameterAlreadyExists",
                    "The parameter already exists. To overwrite this value, set the overwrite option in the request to true.",
                ));
            }
            (Some(old), true) => old.version + 1,
            (None, _) => 1,
        };
        let Some(kind) = kind.or(existing.as_ref().map(|p| p.kind.as_str())) else {
            return Err(validation("A parameter type is required when you create a parameter."));
        };
        self.lock()
            .execute(
                "INSERT INTO dev_parameters (name, type, value, version, modified_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (name) DO UPDATE SET type = ?2, value = ?3, version = ?4, modified_at = ?5",
                params![name, kind, value, version, now],
            )
            .map_err(|err| internal(sql_err(err)))?;
        Ok(json!({"Version": version, "Tier": "Standard"}))
    }

    fn get_one(&self, request: &Value, region: &str) -> Outcome {
        let name = required_name(request)?;
        let decrypt = request["WithDecryption"].as_bool().unwrap_or(false);
        match self.get(name).map_err(internal)? {
            Some(parameter) => Ok(json!({"Parameter": shown(&parameter, decrypt, region)})),
            None => Err(not_found(name)),
        }
    }

    fn get_many(&self, request: &Value, region: &str) -> Outcome {
        let Some(names) = request["Names"].as_array() else {
            return Err(null_member("names"));
        };
        if names.is_empty() || names.len() > MAX_NAMES {
            return Err(validation(format!(
                "1 validation error detected: Value at 'names' failed to satisfy constraint: Member must have length between 1 and {MAX_NAMES}"
            )));
        }
        let decrypt = request["WithDecryption"].as_bool().unwrap_or(false);
        let (mut found, mut invalid) = (Vec::new(), Vec::new());
        for name in names.iter().filter_map(Value::as_str) {
            match self.get(name).map_err(internal)? {
                Some(parameter) => found.push(shown(&parameter, decrypt, region)),
                None => invalid.push(name),
            }
        }
        Ok(json!({"Parameters": found, "InvalidParameters": invalid}))
    }

    fn delete(&self, request: &Value) -> Outcome {
        let name = required_name(request)?;
        let deleted = self
            .lock()
            .execute("DELETE FROM dev_parameters WHERE name = ?1", params![name])
            .map_err(|err| internal(sql_err(err)))?;
        if deleted == 0 { Err(not_found(name)) } else { Ok(json!({})) }
    }
}

fn null_member(member: &str) -> Response {
    validation(format!(
        "1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
    ))
}

fn required_name(request: &Value) -> Result<&str, Response> {
    match request["Name"].as_str() {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(null_member("name")),
    }
}

/// A parameter as GetParameter answers it. Without `WithDecryption` a `SecureString` shows an
/// opaque stand-in for its ciphertext, never the value.
fn shown(parameter: &Parameter, decrypt: bool, region: &str) -> Value {
    let value = if parameter.kind == "SecureString" && !decrypt {
        format!("AQICAH{}", cairn::StepId::hash(&format!("{}#{}", parameter.name, parameter.version)))
    } else {
        parameter.value.clone()
    };
    let path = parameter.name.trim_start_matches('/');
    json!({
        "Name": parameter.name,
        "Type": parameter.kind,
        "Value": value,
        "Version": parameter.version,
        "LastModifiedDate": parameter.modified_at as f64 / 1000.0,
        "ARN": format!("arn:aws:ssm:{region}:{ACCOUNT}:parameter/{path}"),
        "DataType": "text",
    })
}
