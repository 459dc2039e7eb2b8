"""One run's pictures (depth maps, sample grids), drawn by its task module and assembled side by side
by the reports: below the tasks and the reporting, above the data they show."""
