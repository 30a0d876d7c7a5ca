"""The simulated board's battery RTC: a DS3231 at 0x68 on a virtual I2C bus, its clock the world's epoch plus an
offset, with its oscillator-stop flag. Loaded only for a world with the module fitted (`!rtc on`, from the next
boot): the simulated board's code shares the firmware's heap."""
from micropython import const

# (few names: each one the simulator interns is heap the firmware does not get, docs/firmware.md)
_ADDR = const(0x68)  # ds3231.ADDR


class SimI2C:
    """A DS3231 at 0x68 whose clock is the world's epoch plus an offset, with its oscillator-stop flag."""

    def __init__(self, world) -> None:
        self.world = world

    def scan(self):
        return [_ADDR] if self.world.w.get("rtc", False) else []

    def readfrom_mem(self, addr, reg, n):
        if not self.world.w.get("rtc", False) or addr != _ADDR:
            raise OSError(19)
        import ds3231

        w = self.world.w
        t = self.world.epoch() + int(w.get("rtc_offset", 0))
        days, rem = divmod(t, 86400)
        y, mo, d = ds3231.civil_from_days(days)
        b = ds3231._tobcd
        r = bytearray(19)
        r[0] = b(rem % 60)
        r[1] = b((rem // 60) % 60)
        r[2] = b(rem // 3600)
        r[3] = (days + 3) % 7 + 1
        r[4] = b(d)
        r[5] = b(mo) | (0x80 if y >= 2100 else 0)
        r[6] = b(y % 100)
        r[0x0F] = 0x80 if w.get("rtc_osf", False) else 0
        return bytes(r[reg : reg + n])

    def writeto_mem(self, addr, reg, buf):
        if not self.world.w.get("rtc", False) or addr != _ADDR:
            raise OSError(19)
        w = self.world.w
        if reg == 0:
            import ds3231

            fake = ds3231.DS3231(_Regs(buf))
            t = fake.read()
            if t is not None:
                w["rtc_offset"] = t - self.world.epoch()
        elif reg == 0x0F:
            w["rtc_osf"] = bool(buf[0] & 0x80)
        self.world.save()


class _Regs:
    """Lets ds3231.DS3231.read() decode a buffer the firmware wrote."""

    def __init__(self, buf) -> None:
        self.r = bytearray(19)
        self.r[0:7] = buf

    def readfrom_mem(self, addr, reg, n):
        return bytes(self.r[reg : reg + n])
