"""Operations: embedded fleet, launch scripts, fleet profiles."""
