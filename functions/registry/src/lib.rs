//! The one list of this project's workflows: each entry is a Lambda binary (its crate under
//! `functions/`) and what it needs from the stack. `serve` serves all of them over the Inngest
//! protocol, `cairn template` derives template.yaml's function resources from them, and the
//! tests check the template against them. `cairn new NAME` adds an entry; adding a workflow by
//! hand means its crate, a line in this crate's Cargo.toml and a line below.

/// Every Lambda binary of the project, in template order.
pub fn lambdas() -> Vec<cairn_aws::Lambda> {
    vec![
        hello::lambda(),
        order_approval::lambda(),
        readwise_fetch_books::lambda(),
        readwise_daily_sync::lambda(),
        // cairn new: entries above this line
    ]
}

/// Every function of every binary (failure handlers are derived when registered).
pub fn functions() -> Vec<cairn::Function> {
    lambdas().into_iter().flat_map(cairn_aws::Lambda::into_functions).collect()
}
