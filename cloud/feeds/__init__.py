"""Reservation feeds: a lock's iCal URL whose reservations become codes (parse, sync, manage, web page)."""
