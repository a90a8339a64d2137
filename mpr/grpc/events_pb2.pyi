from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class StreamRequest(_message.Message):
    __slots__ = ("job_id", "after_sequence")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_sequence: int
    def __init__(self, job_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class StreamJobsRequest(_message.Message):
    __slots__ = ("after_sequence",)
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    after_sequence: int
    def __init__(self, after_sequence: _Optional[int] = ...) -> None: ...

class PipelineEvent(_message.Message):
    __slots__ = ("job_id", "sequence", "timestamp", "type", "status", "chunk_index", "worker_id", "progress", "fps", "speed", "eta", "message")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    ETA_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    sequence: int
    timestamp: float
    type: str
    status: str
    chunk_index: int
    worker_id: str
    progress: float
    fps: float
    speed: float
    eta: float
    message: str
    def __init__(self, job_id: _Optional[str] = ..., sequence: _Optional[int] = ..., timestamp: _Optional[float] = ..., type: _Optional[str] = ..., status: _Optional[str] = ..., chunk_index: _Optional[int] = ..., worker_id: _Optional[str] = ..., progress: _Optional[float] = ..., fps: _Optional[float] = ..., speed: _Optional[float] = ..., eta: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...
