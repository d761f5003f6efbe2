//! One timestamp column type for both backends, so row types and queries
//! can be shared: `timestamptz` on PostgreSQL; on SQLite an INTEGER of
//! microseconds since the epoch, which compares and indexes correctly
//! (SQLite's text timestamps only sort right if every writer pads alike).

use chrono::{DateTime, TimeZone, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ts(pub DateTime<Utc>);

impl From<DateTime<Utc>> for Ts {
    fn from(t: DateTime<Utc>) -> Self {
        Self(t)
    }
}

impl Type<Postgres> for Ts {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Ts {
    fn encode_by_ref(
        &self,
        buf: &mut <Postgres as sqlx::Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<'_, Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Ts {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        <DateTime<Utc> as Decode<'r, Postgres>>::decode(value).map(Self)
    }
}

impl Type<Sqlite> for Ts {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for Ts {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<'_, Sqlite>>::encode_by_ref(&self.0.timestamp_micros(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Ts {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let micros = <i64 as Decode<'r, Sqlite>>::decode(value)?;
        Utc.timestamp_micros(micros)
            .single()
            .map(Self)
            .ok_or_else(|| format!("timestamp out of range: {micros}").into())
    }
}

/// Postgres keeps microseconds; so does SQLite here. Rounding every time
/// we hand to the database keeps what we return equal to what we re-read.
pub(crate) fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_micros(t.timestamp_micros())
        .single()
        .unwrap_or(t)
}
