//! The `readwise-fetch-books` Lambda function.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    cairn_aws::run(readwise_fetch_books::lambda().into_functions()).await
}
