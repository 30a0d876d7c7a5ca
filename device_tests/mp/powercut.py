"""Power cuts at the n-th file operation, for the MicroPython-side tests of code that must survive them
(store.py's atomic writes, the updater): stand-ins for a module's `os` and `open` count renames, removals,
directory changes and writes, and raise PowerCut at operation n; a cut write keeps a random prefix of its
bytes, as a flash page half written when the power went."""
import os
import random


class PowerCut(Exception):
    pass


class Cutter:
    def __init__(self, n: int) -> None:
        self.n = n
        self.ops = 0
        cut = self

        class CutOs:
            @staticmethod
            def rename(a, b):
                cut.tick()
                os.rename(a, b)

            @staticmethod
            def remove(a):
                cut.tick()
                os.remove(a)

            @staticmethod
            def mkdir(a):
                cut.tick()
                os.mkdir(a)

            @staticmethod
            def rmdir(a):
                cut.tick()
                os.rmdir(a)

            stat = staticmethod(os.stat)
            ilistdir = staticmethod(os.ilistdir)
            listdir = staticmethod(os.listdir)

        self.os = CutOs

    def tick(self) -> None:
        self.ops += 1
        if self.ops == self.n:
            raise PowerCut()

    def open(self, path, mode="r"):
        f = open(path, mode)
        if "w" not in mode and "a" not in mode and "+" not in mode:
            return f
        self.tick()
        return CutFile(self, f)


class CutFile:
    def __init__(self, cut: Cutter, f) -> None:
        self.cut = cut
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.f.close()

    def close(self):
        self.f.close()

    def seek(self, n):
        self.f.seek(n)

    def write(self, b):
        c = self.cut
        c.ops += 1
        if c.ops == c.n:
            k = random.getrandbits(16) % (len(b) + 1)
            self.f.write(bytes(b)[:k])
            self.f.close()
            raise PowerCut()
        return self.f.write(b)


def install(cut: Cutter, modules) -> None:
    """Route the file operations of `modules` through `cut`."""
    for m in modules:
        m.open = cut.open
        m.os = cut.os


def uninstall(modules) -> None:
    for m in modules:
        m.os = os
        try:
            del m.open  # back to the builtin
        except (AttributeError, KeyError):
            m.open = open
