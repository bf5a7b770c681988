//! The shapes of Anthropic's responses that usage reads: the `message_start` and
//! `message_delta` events (see `anthropic_message_event` in the parent module; the event's
//! `type`, its `usage`, and the message's `model` and `usage`), the whole message, and the
//! `usage` object itself, read into [`Usage`] without building a `serde_json::Value`. Only
//! JSON objects are accepted as objects (serde's derive would also take arrays), the last of
//! repeated keys wins (as in a `serde_json::Value`), keys are told apart without allocating,
//! a value of an unexpected type counts as absent, and everything else is skipped without
//! being built. [`Usage::from_value`] gives the same `Usage` from a `Value` (for events read in
//! full); a test holds the two to each other.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

pub struct Event<'a> {
    pub kind: Option<Cow<'a, str>>,
    /// `Some(None)`: present but not an object.
    pub message: Option<Option<Message>>,
    pub usage: Option<Usage>,
}

pub struct Message {
    /// `None` when absent or not a string.
    pub model: Option<String>,
    pub usage: Option<Usage>,
}

/// An Anthropic `usage` object as usage reads it: each field `None` when absent or not of its
/// type (a count must be an integer that fits an i64); a `usage` that is not an object reads as
/// all `None`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cache_read_input_tokens: Option<i64>,
    pub cache_creation_input_tokens: Option<i64>,
    /// `None` when absent or not an object.
    pub cache_creation: Option<Split>,
    pub service_tier: Option<String>,
    pub inference_geo: Option<String>,
}

/// `usage.cache_creation`: the cache writes by lifetime.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Split {
    pub ephemeral_5m_input_tokens: Option<i64>,
    pub ephemeral_1h_input_tokens: Option<i64>,
}

impl Usage {
    /// The same reading of a `usage` already parsed into a `Value`.
    pub fn from_value(usage: &Value) -> Usage {
        let int = |v: &Value, key: &str| v.get(key).and_then(Value::as_i64);
        let text = |key: &str| usage.get(key).and_then(Value::as_str).map(str::to_string);
        Usage {
            input_tokens: int(usage, "input_tokens"),
            output_tokens: int(usage, "output_tokens"),
            cache_read_input_tokens: int(usage, "cache_read_input_tokens"),
            cache_creation_input_tokens: int(usage, "cache_creation_input_tokens"),
            cache_creation: usage.get("cache_creation").filter(|v| v.is_object()).map(|split| Split {
                ephemeral_5m_input_tokens: int(split, "ephemeral_5m_input_tokens"),
                ephemeral_1h_input_tokens: int(split, "ephemeral_1h_input_tokens"),
            }),
            service_tier: text("service_tier"),
            inference_geo: text("inference_geo"),
        }
    }
}

/// The keys of interest, told apart without allocating.
enum Key {
    Type,
    Message,
    Model,
    Usage,
    InputTokens,
    OutputTokens,
    CacheReadInputTokens,
    CacheCreationInputTokens,
    CacheCreation,
    Ephemeral5m,
    Ephemeral1h,
    ServiceTier,
    InferenceGeo,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "type" => Key::Type,
                    "message" => Key::Message,
                    "model" => Key::Model,
                    "usage" => Key::Usage,
                    "input_tokens" => Key::InputTokens,
                    "output_tokens" => Key::OutputTokens,
                    "cache_read_input_tokens" => Key::CacheReadInputTokens,
                    "cache_creation_input_tokens" => Key::CacheCreationInputTokens,
                    "cache_creation" => Key::CacheCreation,
                    "ephemeral_5m_input_tokens" => Key::Ephemeral5m,
                    "ephemeral_1h_input_tokens" => Key::Ephemeral1h,
                    "service_tier" => Key::ServiceTier,
                    "inference_geo" => Key::InferenceGeo,
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// The text of a string, borrowed when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, text: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }
        }
        deserializer.deserialize_str(TextVisitor(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Event<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EventVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for EventVisitor<'a> {
            type Value = Event<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event<'a>, A::Error> {
                let mut event = Event { kind: None, message: None, usage: None };
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Type => event.kind = map.next_value::<Option<Text<'a>>>()?.map(|t| t.0),
                        Key::Message => event.message = Some(map.next_value::<Loose<Message>>()?.0),
                        Key::Usage => {
                            event.usage = Some(map.next_value::<Loose<Usage>>()?.0.unwrap_or_default())
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(event)
            }
        }
        deserializer.deserialize_map(EventVisitor(std::marker::PhantomData))
    }
}

/// The message as a whole response body: `None` when the body is not a JSON object.
pub fn whole_message(body: &[u8]) -> Option<Message> {
    serde_json::from_slice::<Loose<Message>>(body).ok()?.0
}

/// Any JSON value: `Some` when it is a `T` (see [`Shape`]), else `None`, skipped unbuilt.
struct Loose<T>(Option<T>);

/// What a [`Loose`] value accepts: an integer that fits an i64, a string, or an object (a
/// message, a usage, a split).
trait Shape: Sized {
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_str(_: &str) -> Option<Self> {
        None
    }
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// An owned string (a model name, a tier).
struct Owned(String);

impl Shape for i64 {
    fn from_i64(n: i64) -> Option<i64> {
        Some(n)
    }
}

impl Shape for Owned {
    fn from_str(s: &str) -> Option<Owned> {
        Some(Owned(s.to_string()))
    }
}

impl Shape for Message {
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Option<Message>, A::Error> {
        let mut message = Message { model: None, usage: None };
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Model => message.model = map.next_value::<Loose<Owned>>()?.0.map(|t| t.0),
                Key::Usage => message.usage = Some(map.next_value::<Loose<Usage>>()?.0.unwrap_or_default()),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(message))
    }
}

impl Shape for Usage {
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Option<Usage>, A::Error> {
        let mut usage = Usage::default();
        while let Some(key) = map.next_key::<Key>()? {
            let int = |v: Loose<i64>| v.0;
            match key {
                Key::InputTokens => usage.input_tokens = int(map.next_value()?),
                Key::OutputTokens => usage.output_tokens = int(map.next_value()?),
                Key::CacheReadInputTokens => usage.cache_read_input_tokens = int(map.next_value()?),
                Key::CacheCreationInputTokens => usage.cache_creation_input_tokens = int(map.next_value()?),
                Key::CacheCreation => usage.cache_creation = map.next_value::<Loose<Split>>()?.0,
                Key::ServiceTier => usage.service_tier = map.next_value::<Loose<Owned>>()?.0.map(|t| t.0),
                Key::InferenceGeo => usage.inference_geo = map.next_value::<Loose<Owned>>()?.0.map(|t| t.0),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(usage))
    }
}

impl Shape for Split {
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Option<Split>, A::Error> {
        let mut split = Split::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Ephemeral5m => split.ephemeral_5m_input_tokens = map.next_value::<Loose<i64>>()?.0,
                Key::Ephemeral1h => split.ephemeral_1h_input_tokens = map.next_value::<Loose<i64>>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(split))
    }
}

impl<'de, T: Shape> Deserialize<'de> for Loose<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LooseVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Shape> Visitor<'de> for LooseVisitor<T> {
            type Value = Loose<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Loose<T>, E> {
                Ok(Loose(T::from_i64(n)))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Loose<T>, E> {
                Ok(Loose(i64::try_from(n).ok().and_then(T::from_i64)))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Loose<T>, E> {
                Ok(Loose(None))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Loose<T>, E> {
                Ok(Loose(None))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Loose<T>, E> {
                Ok(Loose(None))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Loose<T>, E> {
                Ok(Loose(T::from_str(s)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose<T>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Loose(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Loose<T>, A::Error> {
                Ok(Loose(T::from_map(map)?))
            }
        }
        deserializer.deserialize_any(LooseVisitor(std::marker::PhantomData))
    }
}
