//! The `hello` Lambda function: `cairn_aws::run` does the rest (see cairn-aws's docs for the
//! environment it reads).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    cairn_aws::run(hello::lambda().into_functions()).await
}
