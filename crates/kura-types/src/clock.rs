//! Time, behind a trait so that tests can move it (key deletion after 7 days,
//! rotation periods, signature expiry).

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time with millisecond precision, as milliseconds since the Unix epoch.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    pub const fn from_secs(secs: i64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    pub const fn secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// Seconds since the epoch as a float, the form AWS JSON protocols use for timestamps.
    pub fn epoch_seconds(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    pub const fn plus_millis(self, millis: i64) -> Self {
        Self(self.0.saturating_add(millis))
    }

    pub const fn plus_days(self, days: i64) -> Self {
        self.plus_millis(days.saturating_mul(86_400_000))
    }

    fn to_datetime(self) -> OffsetDateTime {
        let nanos = i128::from(self.0) * 1_000_000;
        OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// `2026-11-22T20:54:32Z`: the form CloudTrail records and SigV4 error messages use.
    pub fn iso8601_seconds(self) -> String {
        self.iso8601_seconds_display().to_string()
    }

    /// [`Self::iso8601_seconds`] as a `Display`, to write it without allocating.
    pub fn iso8601_seconds_display(self) -> impl fmt::Display {
        TimeText(self.to_datetime(), TimeForm::Seconds)
    }

    /// `2026-11-22T20:54:32.123Z`: the form Query/XML protocols use.
    pub fn iso8601_millis(self) -> String {
        TimeText(self.to_datetime(), TimeForm::Millis).to_string()
    }

    /// `20261122T205432Z`: the SigV4 `X-Amz-Date` form.
    pub fn amz_date(self) -> String {
        TimeText(self.to_datetime(), TimeForm::AmzDate).to_string()
    }

    /// Parses the SigV4 `X-Amz-Date` form `YYYYMMDDTHHMMSSZ`.
    pub fn parse_amz_date(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.len() != 16 || b.get(8) != Some(&b'T') || b.get(15) != Some(&b'Z') {
            return None;
        }
        let digits = |range: std::ops::Range<usize>| -> Option<u32> {
            let s = text.get(range)?;
            if s.bytes().all(|c| c.is_ascii_digit()) {
                s.parse().ok()
            } else {
                None
            }
        };
        let year = i32::try_from(digits(0..4)?).ok()?;
        let month = time::Month::try_from(u8::try_from(digits(4..6)?).ok()?).ok()?;
        let day = u8::try_from(digits(6..8)?).ok()?;
        let hour = u8::try_from(digits(9..11)?).ok()?;
        let minute = u8::try_from(digits(11..13)?).ok()?;
        let second = u8::try_from(digits(13..15)?).ok()?;
        let date = time::Date::from_calendar_date(year, month, day).ok()?;
        let t = time::Time::from_hms(hour, minute, second).ok()?;
        let dt = time::PrimitiveDateTime::new(date, t).assume_utc();
        Some(Self::from_secs(dt.unix_timestamp()))
    }

    /// Parses RFC 3339 / ISO 8601 date-times such as `2026-01-01T00:00:00Z`.
    pub fn parse_iso8601(text: &str) -> Option<Self> {
        let dt = OffsetDateTime::parse(text, &Rfc3339).ok()?;
        let millis = dt.unix_timestamp_nanos() / 1_000_000;
        i64::try_from(millis).ok().map(Self)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.iso8601_millis())
    }
}

/// The source of "now" for a service.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The machine's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(millis)
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self(AtomicI64::new(start.millis()))
    }

    pub fn advance_millis(&self, millis: i64) {
        self.0.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// The UTC text forms of a time that AWS protocols use.
#[derive(Clone, Copy, PartialEq)]
enum TimeForm {
    /// `20261122T205432Z`
    AmzDate,
    /// `2026-11-22T20:54:32Z`
    Seconds,
    /// `2026-11-22T20:54:32.123Z`
    Millis,
}

/// A time written in one of the [`TimeForm`]s.
struct TimeText(OffsetDateTime, TimeForm);

impl fmt::Display for TimeText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let TimeText(dt, form) = *self;
        let (date_sep, time_sep) = if form == TimeForm::AmzDate {
            ("", "")
        } else {
            ("-", ":")
        };
        write!(
            f,
            "{:04}{date_sep}{:02}{date_sep}{:02}T{:02}{time_sep}{:02}{time_sep}{:02}",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        )?;
        if form == TimeForm::Millis {
            write!(f, ".{:03}", dt.millisecond())?;
        }
        f.write_str("Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_amz_dates() {
        let t = Timestamp::parse_amz_date("20261122T205432Z");
        assert_eq!(t.map(|t| t.amz_date()), Some("20261122T205432Z".to_owned()));
        assert_eq!(
            t.map(|t| t.iso8601_seconds()),
            Some("2026-11-22T20:54:32Z".to_owned())
        );
        assert_eq!(
            t.map(|t| t.iso8601_millis()),
            Some("2026-11-22T20:54:32.000Z".to_owned())
        );
        for bad in [
            "",
            "20261122T205432",
            "2026112XT205432Z",
            "20261322T205432Z",
            "20261122T255432Z",
        ] {
            assert!(Timestamp::parse_amz_date(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn parses_rfc3339() {
        let t = Timestamp::parse_iso8601("1970-01-01T00:00:01.5Z");
        assert_eq!(t, Some(Timestamp::from_millis(1500)));
        assert_eq!(Timestamp::from_millis(1500).epoch_seconds(), 1.5);
        assert_eq!(
            Timestamp::from_millis(1500).iso8601_millis(),
            "1970-01-01T00:00:01.500Z"
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp::from_secs(10));
        assert_eq!(clock.now(), Timestamp::from_secs(10));
        clock.advance_millis(86_400_000);
        assert_eq!(clock.now(), Timestamp::from_secs(10).plus_days(1));
    }
}
