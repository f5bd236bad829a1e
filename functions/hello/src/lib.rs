//! `hello`: the seed docs' example. On `app/my.event`, `step.run("step-name")` returns
//! `{"success": true}`, then `step.sleep("wait", "1h")`, and the function returns the step's result.

use cairn::prelude::*;
use serde_json::Value;

/// The function, ready to register with a driver.
///
/// # Panics
/// Never: the definition is static and valid (its own test builds it).
pub fn function() -> Function {
    Function::new("hello")
        .name("Hello")
        .on_event("app/my.event")
        .handler(|_event: Event, step: Step| async move {
            let result: Value = step.run("step-name", || async { Ok(json!({ "success": true })) }).await?;
            step.sleep("wait", "1h").await?;
            Ok(result)
        })
        .expect("the hello definition is valid")
}
