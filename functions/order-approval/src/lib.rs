//! `order-approval`: a workflow that waits for a person. On `app/order.placed` it reserves the
//! stock, then waits up to a day for `app/order.approved` with the same `data.order_id`; approved
//! orders ship, the others are released.

use cairn::prelude::*;
use serde_json::Value;

/// The event that starts a run.
pub const PLACED: &str = "app/order.placed";
/// The event a run waits for.
pub const APPROVED: &str = "app/order.approved";

/// The function, ready to register with a driver.
///
/// # Panics
/// Never: the definition is static and valid (its own test builds it).
pub fn function() -> Function {
    Function::new("order-approval")
        .name("Order approval")
        .on_event(PLACED)
        .handler(|event: Event, step: Step| async move {
            let order_id = event.data["order_id"].clone();
            let reserved: Value = step
                .run("reserve-stock", || {
                    let order_id = order_id.clone();
                    async move { Ok(json!({ "order_id": order_id, "reserved": true })) }
                })
                .await?;
            let approval = step
                .wait_for_event("wait-for-approval", WaitFor::event(APPROVED).matching("data.order_id").timeout("1d"))
                .await?;
            match approval {
                Some(approved) => {
                    let by = approved.data["by"].clone();
                    step.run("ship", || {
                        let order_id = order_id.clone();
                        async move { Ok(json!({ "order_id": order_id, "shipped": true, "approved_by": by })) }
                    })
                    .await
                }
                None => {
                    step.run("release-stock", || async move {
                        Ok(json!({ "released": reserved["order_id"], "shipped": false }))
                    })
                    .await
                }
            }
        })
        .expect("the order-approval definition is valid")
}
