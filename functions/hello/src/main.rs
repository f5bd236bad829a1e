//! The `hello` Lambda function: `cairn_aws::run` does the rest (see cairn-aws's docs for the
//! environment it reads).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let sleep = std::env::var("HELLO_SLEEP").unwrap_or_else(|_| "1h".into());
    cairn_aws::run(vec![hello::function_with(&sleep)]).await
}
