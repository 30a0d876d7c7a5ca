"""DS3231 battery-backed RTC over I2C (address 0x68). Takes an I2C object (readfrom_mem / writeto_mem).

read() returns UTC epoch seconds, or None when the oscillator-stop flag says the time is not to be trusted
(battery lost). write() sets the time and clears that flag. The RTC is kept in UTC, 24-hour mode."""
from micropython import const

ADDR = const(0x68)
_STATUS = const(0x0F)
_OSF = const(0x80)


def _bcd(v: int) -> int:
    return (v >> 4) * 10 + (v & 0x0F)


def _tobcd(v: int) -> int:
    return ((v // 10) << 4) | (v % 10)


def days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (no dependence on the port's epoch)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z: int):
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return y + (m <= 2), m, d


class DS3231:
    def __init__(self, i2c, addr: int = ADDR) -> None:
        self.i2c = i2c
        self.addr = addr

    def read(self):
        try:
            if self.i2c.readfrom_mem(self.addr, _STATUS, 1)[0] & _OSF:
                return None
            r = self.i2c.readfrom_mem(self.addr, 0, 7)
        except OSError:
            return None
        s = _bcd(r[0] & 0x7F)
        mi = _bcd(r[1] & 0x7F)
        h = _bcd(r[2] & 0x3F)
        d = _bcd(r[4] & 0x3F)
        mo = _bcd(r[5] & 0x1F)
        y = 2000 + _bcd(r[6]) + (100 if r[5] & 0x80 else 0)
        if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 60):
            return None
        return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s

    def write(self, epoch: int) -> bool:
        days, rem = divmod(int(epoch), 86400)
        y, mo, d = civil_from_days(days)
        if not 2000 <= y < 2200:
            return False
        wd = (days + 3) % 7 + 1  # 1 = Monday
        yy = y - 2000
        buf = bytearray(7)
        buf[0] = _tobcd(rem % 60)
        buf[1] = _tobcd((rem // 60) % 60)
        buf[2] = _tobcd(rem // 3600)
        buf[3] = wd
        buf[4] = _tobcd(d)
        buf[5] = _tobcd(mo) | (0x80 if yy >= 100 else 0)
        buf[6] = _tobcd(yy % 100)
        try:
            self.i2c.writeto_mem(self.addr, 0, buf)
            st = self.i2c.readfrom_mem(self.addr, _STATUS, 1)[0]
            self.i2c.writeto_mem(self.addr, _STATUS, bytes((st & ~_OSF & 0xFF,)))
        except OSError:
            return False
        return True
