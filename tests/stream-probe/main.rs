//! A function binary for the streaming test: `slow` on `test/slow` runs step `first`, sleeps
//! `pause` (3 s, in process when `CAIRN_SLEEP_THRESHOLD_SECS` allows), runs step `second`,
//! and returns "done".

use cairn::prelude::*;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let slow = Function::new("slow")
        .on_event("test/slow")
        .handler(|_: Event, step: Step| async move {
            step.run("first", || async { Ok(1) }).await?;
            step.sleep("pause", "3s").await?;
            step.run("second", || async { Ok(2) }).await?;
            Ok("done")
        })
        .map_err(|err| -> lambda_runtime::Error { err.to_string().into() })?;
    cairn_aws::run(vec![slow]).await
}
