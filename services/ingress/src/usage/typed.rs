//! The shapes of Anthropic's `message_start` and `message_delta` events that usage reads
//! (see `anthropic_message_event` in the parent module): the event's `type`, its `usage`, and
//! the message's `model` and `usage`. Only JSON objects are accepted (serde's derive would
//! also take arrays), the last of repeated keys wins (as in a `serde_json::Value`), keys are
//! told apart without allocating, and everything else is skipped without being built.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

pub struct Event<'a> {
    pub kind: Option<Cow<'a, str>>,
    /// `Some(None)`: present but not an object.
    pub message: Option<Option<Message>>,
    pub usage: Option<Value>,
}

pub struct Message {
    pub model: Option<Value>,
    pub usage: Option<Value>,
}

/// The keys of interest, told apart without allocating.
enum Key {
    Type,
    Message,
    Model,
    Usage,
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

/// A message object, or `None` for any other JSON value (skipped).
struct MaybeMessage(Option<Message>);

impl<'de> Deserialize<'de> for MaybeMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MessageVisitor;
        impl<'de> Visitor<'de> for MessageVisitor {
            type Value = MaybeMessage;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MaybeMessage, A::Error> {
                let mut message = Message { model: None, usage: None };
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Model => message.model = Some(map.next_value()?),
                        Key::Usage => message.usage = Some(map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(MaybeMessage(Some(message)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MaybeMessage, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeMessage(None))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<MaybeMessage, E> {
                Ok(MaybeMessage(None))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<MaybeMessage, E> {
                Ok(MaybeMessage(None))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<MaybeMessage, E> {
                Ok(MaybeMessage(None))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<MaybeMessage, E> {
                Ok(MaybeMessage(None))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<MaybeMessage, E> {
                Ok(MaybeMessage(None))
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<MaybeMessage, E> {
                Ok(MaybeMessage(None))
            }
        }
        deserializer.deserialize_any(MessageVisitor)
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
                        Key::Message => event.message = Some(map.next_value::<MaybeMessage>()?.0),
                        Key::Usage => event.usage = Some(map.next_value()?),
                        Key::Model | Key::Other => {
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
