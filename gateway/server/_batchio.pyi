# The compiled helper (_batchio.c); its contract is documented there and in batchio.py.
MAX_BATCH: int

def recv(fd: int, count: int, /) -> tuple[list[bytes], list[bytes]]: ...
def send(
    fd: int, replies: list[bytes | None], addresses: list[bytes], /
) -> tuple[int, list[tuple[int, int]] | None]: ...
