//! Newtype identifiers, so a room name can never be passed where a participant id belongs.

use std::fmt;
use std::sync::Arc;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(s: impl AsRef<str>) -> Self {
                $name(Arc::from(s.as_ref()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }
    };
}

string_id!(
    /// A room's name, as clients give it in `join`.
    RoomId
);
string_id!(
    /// A participant's server-assigned id (`PA_` + random), unique for the server's life.
    ParticipantId
);
string_id!(
    /// A published track's id: the track id of the publisher's `a=msid`, unique in its room.
    TrackId
);

impl ParticipantId {
    pub fn generate() -> Self {
        let uuid = uuid::Uuid::new_v4().simple().to_string();
        ParticipantId::new(format!("PA_{}", &uuid[..12]))
    }
}
