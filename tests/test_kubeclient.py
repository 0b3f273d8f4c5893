"""The watch stream reader shared by the extender's informers and the node agents."""

from kubenpu.kubeclient import watch_chunks


class Response:
    """A watch response as the official client returns it with _preload_content=False."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.released = False

    def stream(self, amt=None):
        yield from self.chunks

    def release_conn(self) -> None:
        self.released = True


def test_events_per_chunk_with_lines_split_across_chunks():
    response = Response([b'{"a":1}\n{"b"', b":2}\n", b"", b'\n{"c":3}\n'])
    assert list(watch_chunks(response)) == [[{"a": 1}], [{"b": 2}], [], [{"c": 3}]]
    assert response.released


def test_closing_early_releases_the_connection():
    response = Response([b'{"a":1}\n', b'{"b":2}\n'])
    chunks = watch_chunks(response)
    assert next(chunks) == [{"a": 1}]
    chunks.close()
    assert response.released
