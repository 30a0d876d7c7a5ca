"""DS3231 driver: date maths independent of the port's epoch, BCD round trip through the simulated chip."""
import ds3231


class Chip:
    def __init__(self):
        self.r = bytearray(19)

    def readfrom_mem(self, addr, reg, n):
        return bytes(self.r[reg : reg + n])

    def writeto_mem(self, addr, reg, buf):
        self.r[reg : reg + len(buf)] = buf


def test_known_dates():
    assert ds3231.days_from_civil(1970, 1, 1) == 0
    assert ds3231.days_from_civil(2026, 1, 1) * 86400 == 1767225600
    assert ds3231.days_from_civil(2000, 3, 1) - ds3231.days_from_civil(2000, 2, 28) == 2  # leap year
    assert ds3231.days_from_civil(2100, 3, 1) - ds3231.days_from_civil(2100, 2, 28) == 1  # not leap
    for days in (0, 10957, 11016, 20454, 47541, 73048):
        assert ds3231.days_from_civil(*ds3231.civil_from_days(days)) == days


def test_write_read_round_trip_and_osf():
    c = Chip()
    c.r[0x0F] = 0x80  # oscillator stopped: untrusted
    rtc = ds3231.DS3231(c)
    assert rtc.read() is None
    for t in (946684800, 1767225600 + 3723, 4102444799, 4107542400 + 59):
        assert rtc.write(t)
        assert c.r[0x0F] & 0x80 == 0
        assert rtc.read() == t, t
    assert not rtc.write(100)  # before 2000: not representable


def test_bus_error_means_untrusted():
    class Dead:
        def readfrom_mem(self, *a):
            raise OSError(19)

    assert ds3231.DS3231(Dead()).read() is None
