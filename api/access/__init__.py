"""Access control: who the caller is (:mod:`.principal`), what they may do (:mod:`.policy`), and the
credentials behind it (:mod:`.passwords`, :mod:`.tokens`). Routes get it all through ``api.deps``."""
