//! The daily backup window (`PreferredBackupWindow`: `hh24:mi-hh24:mi`, UTC) and when it
//! opens in a backup day.
//!
//! kura has no maintenance to run, but it reports AWS's weekly maintenance window shape
//! and, as AWS does, refuses a backup window that overlaps it.

use crate::error::{RdsError, RdsResult};

/// The window a database gets when its creator names none.
pub(crate) const DEFAULT_BACKUP_WINDOW: &str = "03:00-03:30";
/// The weekly maintenance window every database reports.
pub(crate) const MAINTENANCE_WINDOW: &str = "sun:05:00-sun:05:30";
const MAINTENANCE_START: u32 = 5 * 60;
const MAINTENANCE_MINUTES: u32 = 30;
const MINUTES_PER_DAY: u32 = 24 * 60;
const MIN_BACKUP_MINUTES: u32 = 30;

/// A daily window: its first minute of the day (UTC) and its length in minutes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BackupWindow {
    start: u32,
    minutes: u32,
}

impl BackupWindow {
    /// [`DEFAULT_BACKUP_WINDOW`], parsed.
    const DEFAULT: Self = Self {
        start: 3 * 60,
        minutes: 30,
    };

    /// Parses and checks a `PreferredBackupWindow` as AWS does.
    pub fn parse(text: &str) -> RdsResult<Self> {
        let invalid = || {
            RdsError::InvalidParameterValue(format!(
                "Invalid backup window {text}: it must be in the format hh24:mi-hh24:mi, in UTC."
            ))
        };
        let (from, to) = text.split_once('-').ok_or_else(invalid)?;
        let start = minute_of_day(from).ok_or_else(invalid)?;
        let end = minute_of_day(to).ok_or_else(invalid)?;
        let minutes = (end + MINUTES_PER_DAY - start) % MINUTES_PER_DAY;
        if minutes < MIN_BACKUP_MINUTES {
            return Err(RdsError::InvalidParameterValue(
                "The backup window must be at least 30 minutes.".into(),
            ));
        }
        let window = Self { start, minutes };
        if window.overlaps(MAINTENANCE_START, MAINTENANCE_MINUTES) {
            return Err(RdsError::InvalidParameterValue(
                "The backup window and maintenance window must not overlap.".into(),
            ));
        }
        Ok(window)
    }

    /// A stored window; the default one if it cannot be read (never the case for a
    /// window that went through [`Self::parse`]).
    pub fn stored(text: &str) -> Self {
        Self::parse(text).unwrap_or(Self::DEFAULT)
    }

    /// True if the window shares a minute with `[start, start + minutes)` (both daily).
    fn overlaps(&self, start: u32, minutes: u32) -> bool {
        let begins_inside =
            |a: u32, len: u32, b: u32| (b + MINUTES_PER_DAY - a) % MINUTES_PER_DAY < len;
        begins_inside(self.start, self.minutes, start) || begins_inside(start, minutes, self.start)
    }

    /// When the window last opened at or before `now_millis`, in days of `day_millis`
    /// counted from the Unix epoch (a real day is 86,400,000 ms, midnight UTC; tests
    /// shorten it, and the window keeps its place within the day).
    pub fn last_opened(&self, now_millis: i64, day_millis: i64) -> i64 {
        let day = day_millis.max(1);
        let offset = i64::from(self.start) * day / i64::from(MINUTES_PER_DAY);
        now_millis - (now_millis - offset).rem_euclid(day)
    }
}

/// The request's `PreferredBackupWindow`, checked; `None` if it names none.
pub(crate) fn requested(p: &crate::params::Params<'_>) -> RdsResult<Option<String>> {
    p.string("PreferredBackupWindow")
        .map(|text| BackupWindow::parse(text).map(|_| text.to_owned()))
        .transpose()
}

/// `hh:mm` as minutes since midnight.
fn minute_of_day(text: &str) -> Option<u32> {
    let (hours, minutes) = text.split_once(':')?;
    let two_digits = |s: &str| {
        (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let (h, m) = (two_digits(hours)?, two_digits(minutes)?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn windows_are_checked_as_aws_does() {
        assert_eq!(
            BackupWindow::parse("03:00-03:30").unwrap(),
            BackupWindow {
                start: 180,
                minutes: 30
            }
        );
        // across midnight
        assert_eq!(BackupWindow::parse("23:45-00:15").unwrap().minutes, 30);
        for bad in [
            "3:00-03:30",
            "03:00",
            "24:00-00:30",
            "03:60-04:30",
            "ab:cd-ef:gh",
            "",
        ] {
            assert!(BackupWindow::parse(bad).is_err(), "{bad}");
        }
        let short = BackupWindow::parse("03:00-03:29").unwrap_err();
        assert!(short.to_string().contains("at least 30 minutes"), "{short}");
        for overlapping in ["05:00-05:30", "04:45-05:15", "05:29-06:00", "04:00-06:00"] {
            let e = BackupWindow::parse(overlapping).unwrap_err();
            assert!(
                e.to_string().contains("must not overlap"),
                "{overlapping}: {e}"
            );
        }
        assert!(BackupWindow::parse("04:30-05:00").is_ok());
        assert!(BackupWindow::parse("05:30-06:00").is_ok());
        assert_eq!(
            BackupWindow::parse(DEFAULT_BACKUP_WINDOW).unwrap(),
            BackupWindow::DEFAULT
        );
        assert_eq!(BackupWindow::stored("garbage"), BackupWindow::DEFAULT);
    }

    #[test]
    fn the_window_opens_at_its_place_in_each_day() {
        let day = 86_400_000;
        let window = BackupWindow::parse("12:00-12:30").unwrap();
        let noon = 20_000 * day + day / 2;
        assert_eq!(window.last_opened(noon, day), noon);
        assert_eq!(window.last_opened(noon + 1, day), noon);
        assert_eq!(window.last_opened(noon - 1, day), noon - day);
        // a 3-second test day: the window opens 1.5 s into each day
        assert_eq!(window.last_opened(7_000, 3_000), 4_500);
        assert_eq!(window.last_opened(4_499, 3_000), 1_500);
    }
}
