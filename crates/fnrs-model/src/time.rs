use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC timestamp serialised as Fn does: RFC 3339 with exactly three
/// fractional digits and `Z` (`2019-04-11T08:42:42.836Z`).
///
/// Parsing accepts any RFC 3339 form (no, milli, micro or nano fraction, any
/// offset). Go's zero time `0001-01-01T00:00:00Z`, which Fn's CLI puts in create
/// bodies, parses to [`DateTime::ZERO`] and counts as absent.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DateTime(jiff::Timestamp);

impl DateTime {
    /// Go's zero `time.Time`.
    pub const ZERO: DateTime = DateTime(jiff::Timestamp::constant(-62_135_596_800, 0));

    /// Now, truncated to milliseconds (what is stored is what is served).
    pub fn now() -> Self {
        Self::from_millis(jiff::Timestamp::now().as_millisecond())
    }

    pub fn from_millis(ms: i64) -> Self {
        Self(jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
    }

    pub fn as_millis(&self) -> i64 {
        self.0.as_millisecond()
    }

    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    pub fn timestamp(&self) -> jiff::Timestamp {
        self.0
    }

    /// This time plus a number of seconds, saturating.
    pub fn plus_secs(&self, secs: i64) -> Self {
        Self::from_millis(self.as_millis().saturating_add(secs.saturating_mul(1000)))
    }

    /// RFC 3339 with seconds precision, as in `Fn-Deadline`.
    pub fn to_rfc3339_secs(&self) -> String {
        let d = jiff::tz::Offset::UTC.to_datetime(self.0);
        if !(0..=9999).contains(&d.year()) {
            return self.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        }
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            d.year(),
            d.month(),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        )
    }
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Fields written directly: this runs for every call record.
        let d = jiff::tz::Offset::UTC.to_datetime(self.0);
        if !(0..=9999).contains(&d.year()) {
            return write!(f, "{}", self.0.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"));
        }
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            d.year(),
            d.month(),
            d.day(),
            d.hour(),
            d.minute(),
            d.second(),
            d.millisecond()
        )
    }
}

impl fmt::Debug for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The text did not parse as an RFC 3339 timestamp.
#[derive(Debug, thiserror::Error)]
#[error("invalid RFC 3339 timestamp")]
pub struct ParseTimeError;

impl FromStr for DateTime {
    type Err = ParseTimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ts: jiff::Timestamp = s.parse().map_err(|_| ParseTimeError)?;
        Ok(Self::from_millis(ts.as_millisecond()))
    }
}

impl Serialize for DateTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DateTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millis() {
        let t = DateTime::from_millis(1_555_000_000_123);
        assert_eq!(t.to_string(), "2019-04-11T16:26:40.123Z");
        assert_eq!(
            DateTime::from_millis(1_555_000_000_000).to_string(),
            "2019-04-11T16:26:40.000Z"
        );
        assert_eq!(t.to_rfc3339_secs(), "2019-04-11T16:26:40Z");
        // The direct formatting agrees with strftime's over a spread of
        // instants, from year 1 to 9999.
        let mut ms: i64 = -62_135_596_800_000;
        while ms < 253_402_300_799_000 {
            let t = DateTime::from_millis(ms);
            assert_eq!(
                t.to_string(),
                t.0.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
            );
            assert_eq!(
                t.to_rfc3339_secs(),
                t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
            );
            ms += 7_777_777_777_777;
        }
    }

    #[test]
    fn parses_every_fraction_and_zero() {
        for s in [
            "2019-04-11T16:26:40Z",
            "2019-04-11T16:26:40.1Z",
            "2019-04-11T16:26:40.123456Z",
            "2019-04-11T16:26:40.123456789Z",
            "2019-04-11T18:26:40+02:00",
        ] {
            let t: DateTime = s.parse().unwrap();
            assert_eq!(t.as_millis() / 1000, 1_555_000_000, "{s}");
        }
        let z: DateTime = "0001-01-01T00:00:00.000Z".parse().unwrap();
        assert!(z.is_zero());
        assert_eq!(z.to_string(), "0001-01-01T00:00:00.000Z");
        assert!("yesterday".parse::<DateTime>().is_err());
    }
}
