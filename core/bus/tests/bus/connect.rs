//! Connecting: errors say what failed without the password.

use crm_bus::{Bus, BusError};

#[tokio::test]
async fn connect_errors_never_show_the_password() {
    let refused = Bus::connect("amqp://guest:s3cret-pw@127.0.0.1:1/%2f", crate::support::test_config("test-refused")).await.unwrap_err();
    assert!(matches!(refused, BusError::Unavailable(_)), "{refused:?}");
    assert!(!format!("{refused} {refused:?}").contains("s3cret-pw"), "{refused}");
    assert!(refused.to_string().contains("guest:***@127.0.0.1:1"), "{refused}");

    let malformed =
        Bus::connect("amqp://guest:s3cret-pw@127.0.0.1:notaport/%2f", crate::support::test_config("test-bad")).await.unwrap_err();
    assert!(matches!(malformed, BusError::Invalid(_)), "{malformed:?}");
    assert!(!format!("{malformed} {malformed:?}").contains("s3cret-pw"), "{malformed}");

    let bad_prefix = Bus::connect("amqp://127.0.0.1:1/%2f", crate::support::test_config("no spaces")).await.unwrap_err();
    assert!(matches!(bad_prefix, BusError::Invalid(_)), "{bad_prefix:?}");
}
