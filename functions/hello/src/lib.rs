//! `hello`: the seed docs' example. On `app/my.event`, `step.run("step-name")` returns
//! `{"success": true}`, then `step.sleep("wait", "1h")`, and the function returns the step's result.
//! The binary reads `HELLO_SLEEP` (default `1h`) so a local load test can shorten the sleep; an
//! event may ask for its own with `data.sleep` (e.g. `"10s"`), as the timer-precision test does.

use cairn::prelude::*;
use serde_json::Value;

/// The function, ready to register with a driver.
///
/// # Panics
/// Never: the definition is static and valid (its own test builds it).
pub fn function() -> Function {
    function_with("1h")
}

/// The function with a sleep of `sleep` (`"2s"`, `"1h"`, ...) instead of an hour.
///
/// # Panics
/// When `sleep` is not a duration.
pub fn function_with(sleep: &str) -> Function {
    let sleep = cairn::parse_duration(sleep).expect("HELLO_SLEEP is a duration such as 2s or 1h");
    Function::new("hello")
        .name("Hello")
        .on_event("app/my.event")
        .handler(move |event: Event, step: Step| async move {
            let sleep = event.data["sleep"].as_str().and_then(|text| cairn::parse_duration(text).ok()).unwrap_or(sleep);
            let result: Value = step.run("step-name", || async { Ok(json!({ "success": true })) }).await?;
            step.sleep("wait", sleep).await?;
            Ok(result)
        })
        .expect("the hello definition is valid")
}

/// The `hello` Lambda binary: the function (with `HELLO_SLEEP` read from the environment) and
/// what the stack gives it.
pub fn lambda() -> cairn_aws::Lambda {
    let sleep = std::env::var("HELLO_SLEEP").unwrap_or_else(|_| "1h".into());
    cairn_aws::Lambda::new("hello", vec![function_with(&sleep)])
        .description("hello: on app/my.event, one step, a one-hour sleep, then the step result")
        .env("HELLO_SLEEP", cairn_aws::EnvValue::literal("1h"))
}
