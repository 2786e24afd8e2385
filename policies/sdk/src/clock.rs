//! The tenant's wall clock (`state.clock`): the host works it out from the
//! tenant's IANA time zone, daylight-saving time included, so a policy never
//! does time-zone arithmetic of its own.

use crate::{LocalTime, Weekday};

impl Weekday {
    /// Saturday or Sunday.
    pub fn is_weekend(self) -> bool {
        matches!(self, Weekday::Saturday | Weekday::Sunday)
    }

    /// Monday to Friday.
    pub fn is_weekday(self) -> bool {
        !self.is_weekend()
    }

    /// "monday" .. "sunday".
    pub fn name(self) -> &'static str {
        match self {
            Weekday::Monday => "monday",
            Weekday::Tuesday => "tuesday",
            Weekday::Wednesday => "wednesday",
            Weekday::Thursday => "thursday",
            Weekday::Friday => "friday",
            Weekday::Saturday => "saturday",
            Weekday::Sunday => "sunday",
        }
    }
}

impl LocalTime {
    /// Monday to Friday on the tenant's calendar.
    pub fn is_weekday(&self) -> bool {
        self.weekday.is_weekday()
    }

    /// Saturday or Sunday on the tenant's calendar.
    pub fn is_weekend(&self) -> bool {
        self.weekday.is_weekend()
    }

    /// Minutes since local midnight, 0 to 1439.
    pub fn minute_of_day(&self) -> u32 {
        u32::from(self.hour) * 60 + u32::from(self.minute)
    }

    /// Whether the local time is in `[start_hour:00, end_hour:00)`, e.g.
    /// `between_hours(9, 18)` for 09:00 to 17:59.
    pub fn between_hours(&self, start_hour: u8, end_hour: u8) -> bool {
        (start_hour..end_hour).contains(&self.hour)
    }

    /// The local time as "HH:MM", e.g. "09:30".
    pub fn hh_mm(&self) -> String {
        format!("{:02}:{:02}", self.hour, self.minute)
    }

    /// The local date as "YYYY-MM-DD".
    pub fn date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(weekday: Weekday, hour: u8, minute: u8) -> LocalTime {
        LocalTime {
            time_zone: "America/New_York".into(),
            year: 2026,
            month: 3,
            day: 9,
            weekday,
            hour,
            minute,
            utc_offset_minutes: -240,
        }
    }

    #[test]
    fn weekdays_and_weekends() {
        assert!(Weekday::Friday.is_weekday());
        assert!(Weekday::Saturday.is_weekend());
        assert!(Weekday::Sunday.is_weekend());
        assert!(!Weekday::Monday.is_weekend());
        assert_eq!(Weekday::Wednesday.name(), "wednesday");
        assert!(clock(Weekday::Monday, 9, 30).is_weekday());
        assert!(clock(Weekday::Sunday, 9, 30).is_weekend());
    }

    #[test]
    fn formatting_and_hours() {
        let c = clock(Weekday::Monday, 9, 5);
        assert_eq!(c.hh_mm(), "09:05");
        assert_eq!(c.date(), "2026-03-09");
        assert_eq!(c.minute_of_day(), 545);
        assert!(c.between_hours(9, 18));
        assert!(!clock(Weekday::Friday, 18, 0).between_hours(9, 18));
        assert!(clock(Weekday::Friday, 17, 59).between_hours(9, 18));
        assert!(!clock(Weekday::Friday, 8, 59).between_hours(9, 18));
    }
}
