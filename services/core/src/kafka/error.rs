//! Whose fault a Kafka client error is, and so whether a retry can help: the one place that
//! classifies librdkafka's errors for every service (callers ask [`FaregateError::retryable`]).
//!
//! A broker or network failure (timeouts, leader changes, a broker down, not enough replicas)
//! is external and worth retrying. A refusal that the same request will meet again is not: a
//! message larger than the broker accepts, an invalid topic name, an invalid record, failed
//! authentication or authorization, an unsupported request, and invalid client configuration.
//! Those are the operator's to fix (the broker's limits, credentials, ACLs, topic names) or
//! Faregate's (a record it should not have built); retrying them would block the caller forever.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::error::{ErrorClass, FaregateError};

/// Codes a retry of the same request cannot cure (see the module doc).
fn permanent(code: RDKafkaErrorCode) -> Option<ErrorClass> {
    use RDKafkaErrorCode as C;
    match code {
        // Faregate built a record the broker will never take.
        C::MessageSizeTooLarge
        | C::MessageBatchTooLarge
        | C::InvalidMessageSize
        | C::InvalidRecord
        | C::UnsupportedForMessageFormat => Some(ErrorClass::Internal),
        // The operator's configuration: names, credentials, ACLs, broker policy and versions.
        C::InvalidTopic
        | C::TopicAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed
        | C::DelegationTokenAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication
        | C::InvalidRequiredAcks
        | C::InvalidConfig
        | C::PolicyViolation
        | C::UnsupportedVersion
        | C::UnsupportedCompressionType
        | C::InvalidArgument => Some(ErrorClass::User),
        // librdkafka's own fatal error (e.g. the idempotent producer lost its guarantees): the
        // client cannot be used again.
        C::Fatal => Some(ErrorClass::Internal),
        _ => None,
    }
}

impl FaregateError for KafkaError {
    fn class(&self) -> ErrorClass {
        match self {
            KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) | KafkaError::Subscription(_) => {
                ErrorClass::User
            }
            KafkaError::Nul(_) => ErrorClass::Internal,
            KafkaError::MessageConsumptionFatal(code) => permanent(*code).unwrap_or(ErrorClass::Internal),
            other => other.rdkafka_error_code().and_then(permanent).unwrap_or(ErrorClass::External),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_trouble_is_retried_and_refusals_are_not() {
        let retried = [
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
            KafkaError::MessageProduction(RDKafkaErrorCode::NotEnoughReplicas),
            KafkaError::MessageProduction(RDKafkaErrorCode::NotLeaderForPartition),
            KafkaError::MetadataFetch(RDKafkaErrorCode::BrokerTransportFailure),
            KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopic),
            KafkaError::ConsumerCommit(RDKafkaErrorCode::RequestTimedOut),
            KafkaError::Canceled,
        ];
        for error in &retried {
            assert!(error.retryable(), "{error:?} should be retried");
            assert_eq!(error.class(), ErrorClass::External, "{error:?}");
        }
        let refused = [
            (KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), ErrorClass::Internal),
            (KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord), ErrorClass::Internal),
            (KafkaError::MessageProduction(RDKafkaErrorCode::InvalidTopic), ErrorClass::User),
            (KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed), ErrorClass::User),
            (KafkaError::Global(RDKafkaErrorCode::SaslAuthenticationFailed), ErrorClass::User),
            (KafkaError::MessageProduction(RDKafkaErrorCode::Fatal), ErrorClass::Internal),
            (KafkaError::ClientCreation("bad".into()), ErrorClass::User),
        ];
        for (error, class) in &refused {
            assert!(!error.retryable(), "{error:?} must not be retried");
            assert_eq!(error.class(), *class, "{error:?}");
        }
    }
}
