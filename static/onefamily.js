// Det Fælles Designsystem's behaviour (accordions, details, menus). The pages work without it.
if (window.DKFDS) { window.DKFDS.init(); }
