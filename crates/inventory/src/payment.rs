//! Payments behind a small trait. The built-in test provider follows the card-token convention of
//! real providers' sandboxes: `tok_visa` (and any other `tok_*`) approves, `tok_declined`
//! declines, `tok_slow` answers after a long pause so timeouts can be exercised.

use async_trait::async_trait;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("the card was declined")]
    Declined,
    #[error("the payment token is not one this provider accepts")]
    InvalidToken,
    #[error("the payment provider did not answer in time")]
    TimedOut,
}

/// A charge that went through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentReceipt {
    pub reference: String,
}

#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    /// Charges `amount_cents` in `currency` to the card behind `token`. `reference` is our
    /// idempotency reference for the provider, so a retried charge is not taken twice.
    async fn charge(
        &self,
        token: &str,
        amount_cents: i64,
        currency: &str,
        reference: &str,
    ) -> Result<PaymentReceipt, PaymentError>;

    /// Returns a charge in full.
    async fn refund(&self, reference: &str, amount_cents: i64) -> Result<(), PaymentError>;
}

/// The built-in provider for demos and tests; it moves no money.
#[derive(Debug, Clone)]
pub struct TestPaymentProvider {
    pub slow_token_delay: Duration,
}

impl Default for TestPaymentProvider {
    fn default() -> Self {
        TestPaymentProvider {
            slow_token_delay: Duration::from_secs(30),
        }
    }
}

#[async_trait]
impl PaymentProvider for TestPaymentProvider {
    async fn charge(
        &self,
        token: &str,
        _amount_cents: i64,
        _currency: &str,
        reference: &str,
    ) -> Result<PaymentReceipt, PaymentError> {
        match token {
            "tok_declined" => Err(PaymentError::Declined),
            "tok_slow" => {
                tokio::time::sleep(self.slow_token_delay).await;
                Ok(PaymentReceipt {
                    reference: format!("test_{reference}"),
                })
            }
            token if token.starts_with("tok_") && token.len() <= 64 => Ok(PaymentReceipt {
                reference: format!("test_{reference}"),
            }),
            _ => Err(PaymentError::InvalidToken),
        }
    }

    async fn refund(&self, _reference: &str, _amount_cents: i64) -> Result<(), PaymentError> {
        Ok(())
    }
}
